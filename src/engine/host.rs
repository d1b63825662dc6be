//! The host tier: 64-byte-aligned DRAM slabs of rows within a byte budget.
//!
//! A [`HostSlab`] is one allocation of `slots` rows. Each row (values, then optimizer
//! state) starts on a 64-byte boundary: the stride is the row size rounded up to a
//! multiple of 64 bytes, so a row never shares a cache line with its neighbour and
//! vector loads over a row are aligned. Large slabs are also aligned to 2 MiB and, on
//! Linux, advised to use transparent huge pages, so random row reads do not pay a TLB
//! miss each.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

use super::{Optimizer, RowLayout, RowSlab, TierError};

/// Row alignment (and stride granularity) in bytes: one cache line.
pub const ROW_ALIGN: usize = 64;

/// The size of a transparent huge page.
const HUGE_PAGE: usize = 2 << 20;

/// Slabs (and flat tables) at least this large are advised to use huge pages; slabs
/// are also aligned to 2 MiB.
pub(super) const HUGE_PAGES_FROM: usize = 16 * HUGE_PAGE;

/// Advises the kernel to back the `bytes` bytes at `start` (an allocation of ours, not
/// yet touched) with transparent huge pages, so that random row reads over a large
/// table do not pay a TLB miss each. Only the whole 4 KiB pages inside the range are
/// advised; the advice is a hint, and where it is refused rows use ordinary pages.
pub(super) fn advise_huge_pages(start: *mut u8, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const PAGE: usize = 4096;
        let first = (start as usize).next_multiple_of(PAGE);
        let end = (start as usize + bytes) / PAGE * PAGE;
        if end > first {
            // SAFETY: the pages lie inside the caller's allocation; madvise reads no
            // memory, and MADV_HUGEPAGE never changes the pages' contents.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// A fixed number of 64-byte-aligned row slots in host memory.
pub struct HostSlab {
    ptr: NonNull<f32>,
    alloc: Layout,
    slots: usize,
    /// `f32`s from one row's start to the next (a multiple of 16).
    stride: usize,
    layout: RowLayout,
}

// SAFETY: the slab owns its allocation exclusively; `&self` methods only read it.
unsafe impl Send for HostSlab {}
// SAFETY: as above, shared references never write.
unsafe impl Sync for HostSlab {}

impl HostSlab {
    /// Bytes from one row's start to the next for `layout`: its size rounded up to 64.
    pub fn stride_bytes(layout: RowLayout) -> usize {
        layout.bytes().div_ceil(ROW_ALIGN).max(1) * ROW_ALIGN
    }

    /// A zeroed slab of `slots` rows.
    pub fn new(slots: usize, layout: RowLayout) -> Result<Self, TierError> {
        let fail = |message: String| TierError::Backend { tier: "host".into(), message };
        if layout.dim == 0 {
            return Err(fail("rows need at least one value (dim 0)".into()));
        }
        if slots == 0 {
            return Err(fail("a slab needs at least one slot".into()));
        }
        if slots > u32::MAX as usize + 1 {
            return Err(fail(format!("{slots} slots do not fit 32-bit slot numbers")));
        }
        let stride_bytes = Self::stride_bytes(layout);
        let bytes = slots.checked_mul(stride_bytes).ok_or_else(|| fail(format!("{slots} slots of {stride_bytes} bytes overflow")))?;
        let align = if bytes >= HUGE_PAGES_FROM { HUGE_PAGE } else { ROW_ALIGN };
        let alloc = Layout::from_size_align(bytes, align).map_err(|e| fail(format!("{bytes} bytes: {e}")))?;
        // SAFETY: `alloc` has a non-zero size (slots >= 1, stride >= 64).
        let raw = unsafe {
            if align == HUGE_PAGE {
                alloc::alloc(alloc)
            } else {
                alloc::alloc_zeroed(alloc)
            }
        };
        let ptr = NonNull::new(raw.cast::<f32>()).ok_or_else(|| fail(format!("could not allocate {bytes} bytes for {slots} rows")))?;
        if align == HUGE_PAGE {
            // Advise huge pages before the first touch, then zero (which faults them in).
            advise_huge_pages(raw, bytes);
            // SAFETY: `raw` is valid for `bytes` bytes of writes.
            unsafe { raw.write_bytes(0, bytes) };
        }
        Ok(HostSlab { ptr, alloc, slots, stride: stride_bytes / 4, layout })
    }

    /// As many rows as fit in `bytes` (whole strides); an error if not even one fits.
    pub fn with_budget(bytes: usize, layout: RowLayout) -> Result<Self, TierError> {
        let stride = Self::stride_bytes(layout);
        let slots = bytes / stride;
        if slots == 0 {
            return Err(TierError::Backend {
                tier: "host".into(),
                message: format!("a budget of {bytes} bytes holds no row of {stride} bytes"),
            });
        }
        Self::new(slots, layout)
    }

    /// Bytes this slab holds in memory (slots times the padded stride).
    pub fn resident_bytes(&self) -> usize {
        self.alloc.size()
    }

    fn bad_slot(&self, slot: u32) -> TierError {
        TierError::BadSlot { tier: "host".into(), slot, slots: self.slots }
    }

    fn check_slots(&self, slots: &[u32]) -> Result<(), TierError> {
        match slots.iter().find(|&&s| s as usize >= self.slots) {
            Some(&s) => Err(self.bad_slot(s)),
            None => Ok(()),
        }
    }

    fn check_len(&self, what: &str, got: usize, rows: usize, per_row: usize) -> Result<(), TierError> {
        if got == rows * per_row {
            return Ok(());
        }
        Err(TierError::Backend {
            tier: "host".into(),
            message: format!("{what}: {got} floats for {rows} slots, expected {}", rows * per_row),
        })
    }

    /// Row `slot` (values then state); the caller has checked the slot.
    #[inline]
    fn row_unchecked(&self, slot: usize) -> &[f32] {
        debug_assert!(slot < self.slots);
        // SAFETY: slot < slots, so the row lies inside the allocation, which is
        // initialised (zeroed) and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(slot * self.stride), self.layout.words()) }
    }

    #[inline]
    fn row_unchecked_mut(&mut self, slot: usize) -> &mut [f32] {
        debug_assert!(slot < self.slots);
        // SAFETY: as in `row_unchecked`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(slot * self.stride), self.layout.words()) }
    }

    /// Row `slot` (values then state).
    pub fn row(&self, slot: u32) -> Result<&[f32], TierError> {
        if slot as usize >= self.slots {
            return Err(self.bad_slot(slot));
        }
        Ok(self.row_unchecked(slot as usize))
    }

    /// Row `slot` (values then state), writable.
    pub fn row_mut(&mut self, slot: u32) -> Result<&mut [f32], TierError> {
        if slot as usize >= self.slots {
            return Err(self.bad_slot(slot));
        }
        Ok(self.row_unchecked_mut(slot as usize))
    }
}

impl Drop for HostSlab {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with exactly this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr().cast(), self.alloc) }
    }
}

impl RowSlab for HostSlab {
    fn backend(&self) -> String {
        "host".into()
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
        self.check_len("store", rows.len(), slots.len(), floats)?;
        self.check_slots(slots)?;
        for (&slot, row) in slots.iter().zip(rows.chunks_exact(floats)) {
            self.row_unchecked_mut(slot as usize).copy_from_slice(row);
        }
        Ok(())
    }

    fn load(&self, slots: &[u32], rows: &mut [f32]) -> Result<(), TierError> {
        let floats = self.layout.words();
        self.check_len("load", rows.len(), slots.len(), floats)?;
        self.check_slots(slots)?;
        for (&slot, row) in slots.iter().zip(rows.chunks_exact_mut(floats)) {
            row.copy_from_slice(self.row_unchecked(slot as usize));
        }
        Ok(())
    }

    fn gather(&self, slots: &[u32], out: &mut [f32]) -> Result<(), TierError> {
        let dim = self.layout.dim;
        self.check_len("gather", out.len(), slots.len(), dim)?;
        self.check_slots(slots)?;
        for (&slot, values) in slots.iter().zip(out.chunks_exact_mut(dim)) {
            values.copy_from_slice(&self.row_unchecked(slot as usize)[..dim]);
        }
        Ok(())
    }

    fn apply(&mut self, slots: &[u32], grads: &[f32], optimizer: &Optimizer) -> Result<(), TierError> {
        let dim = self.layout.dim;
        self.check_len("apply", grads.len(), slots.len(), dim)?;
        if optimizer.state_floats() != self.layout.state {
            return Err(TierError::Backend {
                tier: "host".into(),
                message: format!(
                    "apply: {optimizer:?} keeps {} state floats per row, the slab {}",
                    optimizer.state_floats(),
                    self.layout.state
                ),
            });
        }
        self.check_slots(slots)?;
        for (&slot, grad) in slots.iter().zip(grads.chunks_exact(dim)) {
            optimizer.apply_row(self.row_unchecked_mut(slot as usize), grad);
        }
        Ok(())
    }

    fn host_row(&self, slot: u32) -> Option<&[f32]> {
        self.row(slot).ok()
    }

    fn host_row_mut(&mut self, slot: u32) -> Option<&mut [f32]> {
        self.row_mut(slot).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing::{check_slab_against_vec, ADAGRAD};

    #[test]
    fn every_row_starts_64_byte_aligned() {
        for dim in [1, 3, 15, 16, 17, 64, 100, 128] {
            let layout = RowLayout::new(dim, &ADAGRAD);
            let slab = HostSlab::new(37, layout).unwrap();
            assert_eq!(HostSlab::stride_bytes(layout) % 64, 0);
            assert!(HostSlab::stride_bytes(layout) >= layout.bytes());
            for slot in 0..37 {
                let row = slab.host_row(slot).unwrap();
                assert_eq!(row.as_ptr() as usize % 64, 0, "dim {dim} slot {slot}");
                assert_eq!(row.len(), dim + 1);
            }
        }
    }

    #[test]
    fn budget_arithmetic() {
        // dim 128 + 1 state float = 516 bytes, padded to 576.
        let layout = RowLayout::new(128, &ADAGRAD);
        assert_eq!(HostSlab::stride_bytes(layout), 576);
        let slab = HostSlab::with_budget(576 * 10 + 575, layout).unwrap();
        assert_eq!(slab.slots(), 10);
        assert_eq!(slab.resident_bytes(), 5760);
        // dim 16 with SGD is exactly one cache line: no padding.
        let sgd = RowLayout::new(16, &Optimizer::Sgd { lr: 0.1 });
        assert_eq!(HostSlab::with_budget(640, sgd).unwrap().slots(), 10);
        assert!(matches!(HostSlab::with_budget(575, layout), Err(TierError::Backend { .. })));
        assert!(HostSlab::new(0, layout).is_err());
    }

    #[test]
    fn bad_slots_and_lengths_are_errors() {
        let layout = RowLayout::new(4, &ADAGRAD);
        let mut slab = HostSlab::new(3, layout).unwrap();
        let err = slab.store(&[0, 3], &[0.0; 10]).unwrap_err();
        assert!(matches!(err, TierError::BadSlot { slot: 3, slots: 3, .. }), "{err}");
        // Nothing was written before the bad slot was found.
        assert_eq!(slab.host_row(0).unwrap(), &[0.0; 5]);
        assert!(slab.load(&[7], &mut [0.0; 5]).is_err());
        assert!(slab.gather(&[1], &mut [0.0; 3]).is_err());
        assert!(slab.apply(&[u32::MAX], &[0.0; 4], &ADAGRAD).is_err());
        assert!(slab.apply(&[0], &[0.0; 4], &Optimizer::Sgd { lr: 0.1 }).is_err());
        assert!(slab.host_row(3).is_none() && slab.host_row_mut(3).is_none());
    }

    #[test]
    fn matches_a_plain_vec_bit_for_bit() {
        for dim in [1, 7, 128] {
            let mut slab = HostSlab::new(50, RowLayout::new(dim, &ADAGRAD)).unwrap();
            check_slab_against_vec(&mut slab, &ADAGRAD);
            let sgd = Optimizer::Sgd { lr: 0.05 };
            let mut slab = HostSlab::new(50, RowLayout::new(dim, &sgd)).unwrap();
            check_slab_against_vec(&mut slab, &sgd);
        }
    }

    #[test]
    fn large_slabs_allocate_and_free() {
        let layout = RowLayout::new(128, &ADAGRAD);
        let mut slab = HostSlab::with_budget(64 << 20, layout).unwrap();
        let last = slab.slots() as u32 - 1;
        slab.host_row_mut(last).unwrap()[0] = 2.0;
        assert_eq!(slab.host_row(last).unwrap()[0], 2.0);
        assert_eq!(slab.host_row(0).unwrap().as_ptr() as usize % HUGE_PAGE, 0);
    }
}
