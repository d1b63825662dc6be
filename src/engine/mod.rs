//! The tiered embedding engine: rows of embedding tables live in a device tier (GPU HBM,
//! or an emulated device in host memory), a host tier (DRAM slabs) and a storage tier
//! (the whole table in a file on NVMe), moved between them by `strata-policies`.
//!
//! This module holds what every tier shares: the row layout (values in their dtype, then
//! optimizer state in `f32`), the optimizer math (one implementation, so every tier computes
//! bit-identical updates), deterministic row initialisation, the [`RowSlab`] trait
//! that the host and device tiers implement, and how counters combine ([`Combine`]).

pub mod batch;
pub mod collection;
pub mod device;
pub mod dtype;
pub mod flat;
pub mod grouped;
pub mod host;
pub mod placement;
pub mod pool;
pub mod prefetch;
pub mod stats;
pub mod storage;
pub mod table;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

use serde::{Deserialize, Serialize};

pub use self::dtype::{Dtype, Rounding, StoredUpdate};

/// How a row is laid out in every tier: `dim` embedding values stored as `dtype`, then
/// `state` optimizer-state values, always `f32`; [`RowLayout::words`] 32-bit words in
/// all (see [`dtype`] for how half-precision values pack).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowLayout {
    pub dim: usize,
    pub state: usize,
    #[serde(default)]
    pub dtype: Dtype,
}

impl RowLayout {
    /// `f32` values and the state `optimizer` keeps.
    pub fn new(dim: usize, optimizer: &Optimizer) -> Self {
        RowLayout::f32(dim, optimizer.state_floats())
    }

    /// `dim` `f32` values and `state` state values.
    pub const fn f32(dim: usize, state: usize) -> Self {
        RowLayout { dim, state, dtype: Dtype::F32 }
    }

    /// The same row with its values stored as `dtype`.
    pub const fn with_dtype(self, dtype: Dtype) -> Self {
        RowLayout { dtype, ..self }
    }

    /// Words the values take (`dim` for `f32`, half as many for 16-bit values).
    pub fn value_words(&self) -> usize {
        self.dtype.value_words(self.dim)
    }

    /// 32-bit words per row, values and state: the length of a row in every tier.
    pub fn words(&self) -> usize {
        self.value_words() + self.state
    }

    /// Bytes per row in memory.
    pub fn bytes(&self) -> usize {
        4 * self.words()
    }
}

/// As error messages name a row: `dim 128 f16 values + 1 state value`.
impl std::fmt::Display for RowLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.state == 1 { "" } else { "s" };
        write!(f, "dim {} {} values + {} state value{plural}", self.dim, self.dtype, self.state)
    }
}

/// The sparse optimizer applied to embedding rows.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Optimizer {
    /// `w -= lr * g`.
    Sgd { lr: f32 },
    /// Row-wise Adagrad (as FBGEMM and MLPerf DLRM use): one accumulator per row,
    /// `acc += mean(g^2)`, `w -= lr * g / (sqrt(acc) + eps)`.
    RowWiseAdagrad {
        lr: f32,
        #[serde(default = "default_eps")]
        eps: f32,
    },
}

fn default_eps() -> f32 {
    1e-8
}

impl Default for Optimizer {
    fn default() -> Self {
        Optimizer::RowWiseAdagrad { lr: 0.01, eps: default_eps() }
    }
}

impl Optimizer {
    /// Optimizer-state `f32`s stored with each row.
    pub fn state_floats(&self) -> usize {
        match self {
            Optimizer::Sgd { .. } => 0,
            Optimizer::RowWiseAdagrad { .. } => 1,
        }
    }

    /// Updates one row (`dim` values then its state) with its gradient. Every tier
    /// calls this, or the two halves below for many rows (the CUDA kernel mirrors it
    /// operation by operation, without fused multiply-adds), so where a row lives never
    /// changes the result.
    pub fn apply_row(&self, row: &mut [f32], grad: &[f32]) {
        with_wide_vectors(
            #[inline(always)]
            || {
                let mut sum = [0f32];
                self.gradient_sums_kernel(grad, grad.len(), &mut sum);
                self.apply_row_kernel(row, grad, sum[0]);
            },
        )
    }

    /// The part of the update that depends on each gradient row alone, for the
    /// `grads.len() / dim` rows of `grads` (`dim` values each) into `out` (one value per
    /// row): for row-wise Adagrad the sum of the row's squares, added from its first
    /// value to its last; nothing for SGD. Eight rows' sums run interleaved, so their
    /// chains of additions overlap instead of waiting on each other; each row's sum is
    /// still added in the same order, bit for bit.
    pub fn gradient_sums(&self, grads: &[f32], dim: usize, out: &mut [f32]) {
        with_wide_vectors(
            #[inline(always)]
            || self.gradient_sums_kernel(grads, dim, out),
        )
    }

    /// Updates one row (`dim` values then its state) with its gradient `grad`, given
    /// `sum`, the value [`Optimizer::gradient_sums`] gives for `grad`.
    pub fn apply_row_with_sum(&self, row: &mut [f32], grad: &[f32], sum: f32) {
        with_wide_vectors(
            #[inline(always)]
            || self.apply_row_kernel(row, grad, sum),
        )
    }

    #[inline(always)]
    fn gradient_sums_kernel(&self, grads: &[f32], dim: usize, out: &mut [f32]) {
        /// Rows whose sums are interleaved.
        const ROWS: usize = 8;
        if matches!(self, Optimizer::Sgd { .. }) || dim == 0 {
            return;
        }
        for (group, out) in grads.chunks(ROWS * dim).zip(out.chunks_mut(ROWS)) {
            if out.len() == ROWS {
                let rows: [&[f32]; ROWS] = std::array::from_fn(|k| &group[k * dim..][..dim]);
                let mut sums = [0f32; ROWS];
                for j in 0..dim {
                    for (sum, row) in sums.iter_mut().zip(&rows) {
                        *sum += row[j] * row[j];
                    }
                }
                out.copy_from_slice(&sums);
            } else {
                for (row, out) in group.chunks_exact(dim).zip(out) {
                    let mut sum = 0f32;
                    for &g in row {
                        sum += g * g;
                    }
                    *out = sum;
                }
            }
        }
    }

    #[inline(always)]
    fn apply_row_kernel(&self, row: &mut [f32], grad: &[f32], sum: f32) {
        let dim = grad.len();
        match *self {
            Optimizer::Sgd { lr } => {
                for (w, &g) in row[..dim].iter_mut().zip(grad) {
                    *w -= lr * g;
                }
            }
            Optimizer::RowWiseAdagrad { lr, eps } => {
                let acc = row[dim] + sum / dim as f32;
                row[dim] = acc;
                let step = lr / (acc.sqrt() + eps);
                for (w, &g) in row[..dim].iter_mut().zip(grad) {
                    *w -= step * g;
                }
            }
        }
    }
}

/// Runs `kernel` compiled for AVX-512 or AVX2 when the CPU has them (the standard
/// library checks once per process), else for the baseline target. The engine's row
/// kernels (pooling, gradient sums, [`Optimizer::apply_row`]) are element-wise or keep
/// their order of operations, and Rust never fuses a multiply and an add unless told to
/// (`mul_add`, which rounds once on every path), so the wider vectors change speed, never
/// a bit of a result. `kernel` should be an
/// `#[inline(always)]` closure calling `#[inline(always)]` functions, so that all of it
/// is compiled for the wider vectors.
#[inline(always)]
pub fn with_wide_vectors<R>(kernel: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<R>(kernel: impl FnOnce() -> R) -> R {
            kernel()
        }
        #[target_feature(enable = "avx2,fma")]
        fn avx2<R>(kernel: impl FnOnce() -> R) -> R {
            kernel()
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512(kernel) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { avx2(kernel) };
        }
    }
    kernel()
}

/// How a new table's rows are initialised.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RowInit {
    Zeros,
    /// Uniform in `[-scale, scale)` from a hash of `(seed, row, column)`: any row can be
    /// initialised on its own, in any order, with the same result.
    Uniform {
        seed: u64,
        scale: f32,
    },
}

/// The initial contents of a new table's rows, any row on its own and in any order.
pub trait InitRows {
    /// Fills `row` (values then state) with the initial contents of row `index`.
    /// Optimizer state starts at zero.
    fn fill(&self, index: u64, layout: RowLayout, row: &mut [f32]);
}

impl RowInit {
    /// The initial values (`out.len()` of them) of row `index`, in `f32`.
    fn values(&self, index: u64, out: &mut [f32]) {
        match *self {
            RowInit::Zeros => out.fill(0.0),
            RowInit::Uniform { seed, scale } => {
                let base = crate::hash::mix64(seed ^ crate::hash::mix64(index));
                for (j, v) in out.iter_mut().enumerate() {
                    let h = crate::hash::mix64(base.wrapping_add(j as u64));
                    *v = scale * (((h >> 40) as f32 / (1u64 << 23) as f32) - 1.0);
                }
            }
        }
    }
}

impl InitRows for RowInit {
    /// The values in `f32`, rounded to nearest in a half-precision row.
    fn fill(&self, index: u64, layout: RowLayout, row: &mut [f32]) {
        debug_assert_eq!(row.len(), layout.words());
        let values = layout.value_words();
        match layout.dtype {
            Dtype::F32 => self.values(index, &mut row[..values]),
            dtype => {
                let mut wide = vec![0f32; layout.dim];
                self.values(index, &mut wide);
                dtype.encode(&wide, &mut row[..values], Rounding::Nearest, 0);
            }
        }
        row[values..].fill(0.0);
    }
}

/// How two sets of counters combine: a later snapshot less an earlier one of the same
/// table (`since`: one phase of a run), or two tables' counters added (`plus`: the table
/// groups of a [`GroupedTable`](crate::engine::grouped::GroupedTable) as one).
#[derive(Clone, Copy)]
pub struct Combine {
    pub count: fn(u64, u64) -> u64,
    pub seconds: fn(f64, f64) -> f64,
    /// Sizes (capacities) add up across tables, but not across snapshots.
    pub sizes: bool,
}

pub const SINCE: Combine = Combine { count: |a, b| a - b, seconds: |a, b| a - b, sizes: false };
pub const PLUS: Combine = Combine { count: |a, b| a + b, seconds: |a, b| a + b, sizes: true };

impl Combine {
    pub fn size(&self, a: u64, b: u64) -> u64 {
        if self.sizes {
            a + b
        } else {
            a
        }
    }
}

/// Anything the engine can fail with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A tier's byte budget is smaller than one row.
    #[error("engine config: {tier}: {bytes} bytes hold no row of {stride} bytes")]
    TierTooSmall { tier: placement::Level, bytes: u64, stride: u64 },
    /// A tier's size was given both in rows and in bytes.
    #[error("engine config: {tier}: give rows or bytes, not both (rows = {rows}, bytes = {bytes})")]
    TierSizedTwice { tier: placement::Level, rows: usize, bytes: u64 },
    /// The store's rows carry another number of optimizer-state values than the
    /// configured optimizer keeps.
    #[error("engine config: {store}: rows carry {has} optimizer values, the configured optimizer needs {needs}")]
    OptimizerState { store: String, has: usize, needs: usize },
    #[error("engine config: {0}")]
    Policy(#[from] strata_policies::PolicyConfigError),
    /// Half-precision rows in a CUDA device tier, whose kernels pool and update `f32`.
    #[error("engine config: {store}: {dtype} rows cannot live in a CUDA device tier yet (its kernels pool and update f32 rows); use the emulated device or f32 rows")]
    DtypeOnCuda { store: String, dtype: Dtype },
    /// A buffer handed in with a batch has the wrong number of values.
    #[error("{} {got} values, the batch needs {needs}", .what.holds())]
    Length { what: Buffer, got: usize, needs: usize },
    /// A batch's bag offsets do not rise from 0 to its number of ids: offset `index`
    /// is `offset` (`None`: the batch has no offsets).
    #[error("batch at {start}: bag offsets must rise from 0 to the {ids} ids ({})", describe_offset(*.index, *.offset))]
    BagOffsets { start: u64, ids: usize, index: usize, offset: Option<usize> },
    #[error("batch at {start}: {times} next-access times for {ids} ids")]
    NextAccessCount { start: u64, times: usize, ids: usize },
    #[error("batch at {start}: {weights} weights for {ids} ids")]
    WeightCount { start: u64, weights: usize, ids: usize },
    /// A batch whose row and bag numbers do not fit one 64-bit key together.
    #[error("a batch of {bags} bags with rows up to {largest_row} is too large to group by row (64-bit keys)")]
    BatchTooLarge { bags: usize, largest_row: u64 },
    #[error("row {row} is out of range: the table has {rows} rows")]
    RowOutOfRange { row: u64, rows: u64 },
    /// Tables of several dims that do not form their groups, or a use that needs one
    /// group ([`grouped`]).
    #[error("table groups: {0}")]
    Groups(String),
    /// A batch that does not fit a grouped table's tables: not whole samples, or
    /// gradients of another batch than the one looked up.
    #[error("batch at {start}: {what}")]
    Samples { start: u64, what: String },
    /// A checkpoint was asked to be protected with writes since the last flush.
    #[error("{store}: protecting checkpoint {checkpoint} needs a flush first (rows were written since the last one)")]
    CheckpointNotFlushed { store: String, checkpoint: u64 },
    #[error("the storage I/O thread stopped")]
    IoThreadGone,
    /// The thread producing batches for the prefetch pipeline panicked (`panic`: its
    /// message).
    #[error("the batch source failed: {panic}")]
    SourceFailed { panic: String },
    /// A write to the store failed earlier (reported then, as `earlier`); the store may
    /// be behind the tiers, so the storage thread serves nothing more.
    #[error("the store refuses further work after an earlier failed write: {earlier}")]
    StoreFailed { earlier: String },
    /// Placement moved a row through a tier the table does not have, or out of a tier
    /// that does not hold it: the moves and the tiers disagree (a bug).
    #[error("placement moved a row through the {tier} tier, which this table does not have")]
    NoTier { tier: placement::Level },
    #[error("placement moved row {row} out of the {tier} tier, which does not hold it")]
    NotInTier { tier: placement::Level, row: u64 },
    /// A row changed in the store by another writer has unsaved updates in a memory
    /// tier: a table being trained cannot also follow another writer.
    #[error("row {row} changed in the store while the {tier} tier holds an update of it not yet written down")]
    RefreshDirty { tier: placement::Level, row: u64 },
    /// A call to a file-cached store failed earlier (`first`): the cache's slot map is
    /// ahead of its file, so it serves nothing more.
    #[error("{}: the file cache refuses further work after an earlier failure: {first}", cache.display())]
    FileCacheBroken { cache: std::path::PathBuf, first: String },
    #[error(transparent)]
    Tier(#[from] TierError),
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// A failure of the remote tier (boxed: it carries the key, slot and node).
    #[error(transparent)]
    Remote(Box<storage::remote::RemoteError>),
}

/// A buffer handed to the tiered table with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffer {
    /// The pooled outputs of [`TieredTable::lookup`](table::TieredTable::lookup).
    LookupOutput,
    /// The gradients of the pooled outputs, for
    /// [`TieredTable::apply_gradients`](table::TieredTable::apply_gradients).
    Gradients,
}

impl Buffer {
    /// The buffer and the verb of a length error.
    fn holds(self) -> &'static str {
        match self {
            Buffer::LookupOutput => "lookup output holds",
            Buffer::Gradients => "gradients hold",
        }
    }
}

fn describe_offset(index: usize, offset: Option<usize>) -> String {
    match offset {
        Some(offset) => format!("offset {index} is {offset}"),
        None => "there are none".to_string(),
    }
}

/// A failure inside a host or device tier.
#[derive(Debug, thiserror::Error)]
pub enum TierError {
    #[error("{tier}: {message}")]
    Backend { tier: String, message: String },
    #[error("{tier}: slot {slot} is out of range ({slots} slots)")]
    BadSlot { tier: String, slot: u32, slots: usize },
}

/// A fixed number of row slots in one memory (host DRAM, device HBM, or an emulated
/// device), each holding one row of a [`RowLayout`]. The tiered table decides which
/// row lives in which slot; a slab only stores, copies and updates.
pub trait RowSlab: Send {
    /// What runs this slab, for reports: `host`, `emulated-device`, `cuda:0 (...)`.
    fn backend(&self) -> String;
    /// True for the stand-in device that lives in host memory.
    fn emulated(&self) -> bool;
    fn layout(&self) -> RowLayout;
    fn slots(&self) -> usize;
    /// Writes whole rows (values and state), `rows[i * floats..]` into `slots[i]`.
    fn store(&mut self, slots: &[u32], rows: &[f32]) -> Result<(), TierError>;
    /// Reads whole rows out of `slots` into `rows`.
    fn load(&self, slots: &[u32], rows: &mut [f32]) -> Result<(), TierError>;
    /// Reads only the `dim` values of each slot, `out[i * dim..]` from `slots[i]`.
    fn gather(&self, slots: &[u32], out: &mut [f32]) -> Result<(), TierError>;
    /// Applies `optimizer` to each slot with its gradient `grads[i * dim..]`. The slots of
    /// one call must be distinct (the device tier updates them in parallel; the tiered
    /// table merges a batch's gradients per row first).
    fn apply(&mut self, slots: &[u32], grads: &[f32], optimizer: &Optimizer) -> Result<(), TierError>;
    /// Row `slot` in place (its `floats()` values and state) for slabs in host memory, so
    /// bags can be pooled straight from wherever their rows live; `None` for a slab in
    /// device memory, or for a slot out of range.
    fn host_row(&self, _slot: u32) -> Option<&[f32]> {
        None
    }
    /// Row `slot` in place, writable; `None` as for [`RowSlab::host_row`].
    fn host_row_mut(&mut self, _slot: u32) -> Option<&mut [f32]> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rowwise_adagrad_matches_hand_computation() {
        let opt = Optimizer::RowWiseAdagrad { lr: 0.5, eps: 0.0 };
        let mut row = vec![1.0, 2.0, 0.0];
        opt.apply_row(&mut row, &[3.0, 4.0]);
        // acc = (9 + 16) / 2 = 12.5; step = 0.5 / sqrt(12.5)
        let step = 0.5f32 / 12.5f32.sqrt();
        assert_eq!(row, vec![1.0 - step * 3.0, 2.0 - step * 4.0, 12.5]);
        let sgd = Optimizer::Sgd { lr: 0.1 };
        let mut row = vec![1.0, 1.0];
        sgd.apply_row(&mut row, &[1.0, -2.0]);
        assert_eq!(row, vec![1.0 - 0.1, 1.0 + 0.2]);
    }

    #[test]
    fn interleaved_gradient_sums_are_the_sequential_sums_bit_for_bit() {
        let mut values = testing::TestValues::new(5);
        for dim in [1, 3, 128] {
            // 19 rows: two interleaved groups of eight and three rows on their own.
            let mut grads = vec![0f32; 19 * dim];
            values.fill(&mut grads, 1.0);
            let adagrad = Optimizer::RowWiseAdagrad { lr: 0.1, eps: 1e-8 };
            let mut sums = vec![f32::NAN; 19];
            adagrad.gradient_sums(&grads, dim, &mut sums);
            for (row, &sum) in grads.chunks_exact(dim).zip(&sums) {
                let sequential = row.iter().fold(0f32, |s, &g| s + g * g);
                assert_eq!(sum.to_bits(), sequential.to_bits(), "dim {dim}");
            }
            // Split or whole, the update is the same.
            let mut whole = vec![0.5f32; dim + 1];
            let mut split = whole.clone();
            adagrad.apply_row(&mut whole, &grads[..dim]);
            adagrad.apply_row_with_sum(&mut split, &grads[..dim], sums[0]);
            assert_eq!(whole, split);
        }
    }

    #[test]
    fn uniform_init_is_deterministic_per_row_and_bounded() {
        let layout = RowLayout::f32(8, 1);
        let init = RowInit::Uniform { seed: 3, scale: 0.05 };
        let (mut a, mut b, mut c) = (vec![0f32; 9], vec![0f32; 9], vec![0f32; 9]);
        init.fill(10, layout, &mut a);
        init.fill(10, layout, &mut b);
        init.fill(11, layout, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a[..8].iter().all(|v| v.abs() <= 0.05) && a[8] == 0.0);
    }
}
