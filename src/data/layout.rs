//! The embedding-table layout: row counts and multi-hot sizes per table, and the map
//! from `(table, row)` to one dense global row index.

use serde::{Deserialize, Serialize};

/// MLPerf DLRM-DCNv2 (Criteo 1TB) cardinalities of the 26 categorical features.
pub const CRITEO_CARDINALITIES: [u64; 26] = [
    40_000_000, 39_060, 17_295, 7_424, 20_265, 3, 7_122, 1_543, 63, 40_000_000, 3_067_956, 405_282, 10, 2_209, 11_938, 155, 4, 976, 14,
    40_000_000, 40_000_000, 40_000_000, 590_152, 12_973, 108, 36,
];

/// MLPerf DLRM-DCNv2 multi-hot sizes (214 lookups per sample).
pub const CRITEO_MULTI_HOT: [usize; 26] = [3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1];
/// Rows a table layout may hold in all (2^40): far beyond any real model, and small
/// enough that row indices and byte offsets never overflow.
pub const MAX_ROWS: u64 = 1 << 40;

/// Dense (integer) features of a Criteo sample.
pub const CRITEO_DENSE_FEATURES: usize = 13;

/// Row counts and lookups per sample of each table, with global row offsets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TableLayout {
    rows: Vec<u64>,
    multi_hot: Vec<usize>,
    offsets: Vec<u64>,
}

impl TableLayout {
    /// Tables with the given row counts and lookups per sample.
    pub fn new(rows: Vec<u64>, multi_hot: Vec<usize>) -> Self {
        assert_eq!(rows.len(), multi_hot.len(), "one multi-hot size per table");
        let mut offsets = Vec::with_capacity(rows.len() + 1);
        let mut total = 0u64;
        for &r in &rows {
            offsets.push(total);
            total += r;
        }
        offsets.push(total);
        TableLayout { rows, multi_hot, offsets }
    }

    /// Whether `scale` gives a usable MLPerf Criteo layout: positive, finite, and at
    /// most [`MAX_ROWS`] rows in all (so row counts never wrap).
    pub fn check_criteo_scale(scale: f64) -> Result<(), String> {
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(format!("must be positive, got {scale}"));
        }
        let rows: f64 = CRITEO_CARDINALITIES.iter().map(|&c| (c as f64 * scale).ceil().max(1.0)).sum();
        if rows > MAX_ROWS as f64 {
            return Err(format!("{scale} gives {rows:.3e} rows, more than the {MAX_ROWS} a layout may hold"));
        }
        Ok(())
    }

    /// The MLPerf Criteo layout with every cardinality multiplied by `scale` (rounded
    /// up, at least one row), multi-hot or one lookup per table.
    pub fn criteo(scale: f64, multi_hot: bool) -> Self {
        let rows = CRITEO_CARDINALITIES.iter().map(|&c| ((c as f64 * scale).ceil() as u64).max(1)).collect();
        let hot = if multi_hot { CRITEO_MULTI_HOT.to_vec() } else { vec![1; CRITEO_CARDINALITIES.len()] };
        TableLayout::new(rows, hot)
    }

    pub fn tables(&self) -> usize {
        self.rows.len()
    }

    pub fn rows(&self) -> &[u64] {
        &self.rows
    }

    pub fn multi_hot(&self) -> &[usize] {
        &self.multi_hot
    }

    /// Lookups in one sample, over all tables.
    pub fn lookups_per_sample(&self) -> usize {
        self.multi_hot.iter().sum()
    }

    /// Rows over all tables.
    pub fn total_rows(&self) -> u64 {
        self.offsets[self.rows.len()]
    }

    /// The dense global index of `row` of `table`.
    #[inline]
    pub fn global_row(&self, table: usize, row: u64) -> u64 {
        debug_assert!(row < self.rows[table]);
        self.offsets[table] + row
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_criteo_layout_matches_mlperf() {
        let layout = TableLayout::criteo(1.0, true);
        assert_eq!(layout.total_rows(), 204_184_588);
        assert_eq!(layout.lookups_per_sample(), 214);
        assert_eq!(layout.global_row(1, 0), 40_000_000);
    }

    #[test]
    fn scales_that_would_overflow_the_row_count_are_refused() {
        assert!(TableLayout::check_criteo_scale(1.0).is_ok());
        assert!(TableLayout::check_criteo_scale(1000.0).is_ok());
        let err = TableLayout::check_criteo_scale(1e12).unwrap_err();
        assert!(err.contains("1000000000000 gives") && err.contains("more than"), "{err}");
        assert!(TableLayout::check_criteo_scale(-1.0).unwrap_err().contains("positive"));
        assert!(TableLayout::check_criteo_scale(f64::NAN).is_err());
    }

    #[test]
    fn scaled_layout_keeps_every_table() {
        let layout = TableLayout::criteo(0.001, false);
        assert_eq!(layout.rows()[0], 40_000);
        assert_eq!(layout.rows()[5], 1);
        assert_eq!(layout.lookups_per_sample(), 26);
    }
}
