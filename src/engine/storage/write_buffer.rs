//! The storage thread's write-back buffer: dirty rows held in memory and written down
//! in page order, a piece at a time while the thread has nothing else to do, so that
//! rows sharing a page cost one page read-modify-write instead of one each, reads never
//! wait behind a whole drain, and reads of a held row are served from it.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

/// Counters of the write-back buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteBufferStats {
    /// Rows it holds at most (0 = no buffer: every write goes straight down).
    pub capacity_rows: u64,
    /// Row writes taken in.
    pub rows_in: u64,
    /// Row writes that replaced a held copy of the same row (never written down).
    pub rows_replaced: u64,
    /// Rows written down to the store.
    pub rows_out: u64,
    /// Pieces written down (idle or full; on a sync, one piece holding every row).
    pub drains: u64,
    /// Row reads answered from it instead of the store.
    pub read_hits: u64,
}

impl WriteBufferStats {
    /// The counts since `earlier`, a snapshot of the same buffer.
    pub fn since(&self, earlier: &WriteBufferStats) -> WriteBufferStats {
        self.combine(earlier, crate::engine::SINCE)
    }

    pub fn combine(&self, other: &WriteBufferStats, op: crate::engine::Combine) -> WriteBufferStats {
        let count = op.count;
        WriteBufferStats {
            capacity_rows: op.size(self.capacity_rows, other.capacity_rows),
            rows_in: count(self.rows_in, other.rows_in),
            rows_replaced: count(self.rows_replaced, other.rows_replaced),
            rows_out: count(self.rows_out, other.rows_out),
            drains: count(self.drains, other.drains),
            read_hits: count(self.read_hits, other.read_hits),
        }
    }
}

/// Dirty rows by row index, each row's newest copy only.
pub struct WriteBuffer {
    floats: usize,
    index: FxHashMap<u64, usize>,
    rows: Vec<u64>,
    data: Vec<f32>,
    /// Where the next piece starts: pieces sweep the rows upward, then wrap.
    cursor: u64,
    pub stats: WriteBufferStats,
}

impl WriteBuffer {
    /// A buffer of `capacity_rows` rows of `floats` values each.
    pub fn new(capacity_rows: usize, floats: usize) -> Self {
        WriteBuffer {
            floats,
            index: FxHashMap::default(),
            rows: Vec::new(),
            data: Vec::new(),
            cursor: 0,
            stats: WriteBufferStats { capacity_rows: capacity_rows as u64, ..WriteBufferStats::default() },
        }
    }

    pub fn capacity(&self) -> usize {
        self.stats.capacity_rows as usize
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    #[cfg(test)]
    pub fn is_full(&self) -> bool {
        self.rows.len() >= self.capacity()
    }

    /// Whether pieces should be written down while the thread is idle: above half full.
    pub fn wants_draining(&self) -> bool {
        self.rows.len() > self.capacity() / 2
    }

    /// Takes in `rows` (`data[i * floats..]` for `rows[i]`), a later copy of a row
    /// replacing an earlier one.
    pub fn insert(&mut self, rows: &[u64], data: &[f32]) {
        let floats = self.floats;
        for (i, &row) in rows.iter().enumerate() {
            let values = &data[i * floats..(i + 1) * floats];
            self.stats.rows_in += 1;
            match self.index.get(&row) {
                Some(&at) => {
                    self.stats.rows_replaced += 1;
                    self.data[at * floats..(at + 1) * floats].copy_from_slice(values);
                }
                None => {
                    self.index.insert(row, self.rows.len());
                    self.rows.push(row);
                    self.data.extend_from_slice(values);
                }
            }
        }
    }

    /// The held copy of `row`, if any.
    pub fn get(&self, row: u64) -> Option<&[f32]> {
        self.index.get(&row).map(|&at| &self.data[at * self.floats..(at + 1) * self.floats])
    }

    /// Counts `rows` reads answered from the buffer.
    pub fn count_read_hits(&mut self, rows: usize) {
        self.stats.read_hits += rows as u64;
    }

    /// Takes out up to `max_rows` held rows with their values, in row order from where
    /// the last piece ended (wrapping to the lowest row): an elevator sweep over the
    /// file, so every page's held rows leave together.
    pub fn drain_piece(&mut self, max_rows: usize) -> (Vec<u64>, Vec<f32>) {
        let floats = self.floats;
        let mut order = self.rows.clone();
        order.sort_unstable();
        let start = order.partition_point(|&row| row < self.cursor);
        let piece: Vec<u64> = order[start..].iter().chain(&order[..start]).take(max_rows).copied().collect();
        let mut data = Vec::with_capacity(piece.len() * floats);
        for &row in &piece {
            let at = self.index.remove(&row).expect("a held row");
            data.extend_from_slice(&self.data[at * floats..(at + 1) * floats]);
            // The last held row moves into the freed place.
            let last = self.rows.len() - 1;
            if at != last {
                let moved = self.rows[last];
                self.rows[at] = moved;
                self.data.copy_within(last * floats..(last + 1) * floats, at * floats);
                self.index.insert(moved, at);
            }
            self.rows.pop();
            self.data.truncate(last * floats);
        }
        if let Some(&end) = piece.last() {
            self.cursor = end + 1;
        }
        self.stats.drains += 1;
        self.stats.rows_out += piece.len() as u64;
        (piece, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_sweep_upward_from_where_the_last_ended_and_wrap() {
        let mut buffer = WriteBuffer::new(10, 1);
        buffer.insert(&[50, 10, 30, 20, 40], &[5.0, 1.0, 3.0, 2.0, 4.0]);
        assert_eq!(buffer.drain_piece(2), (vec![10, 20], vec![1.0, 2.0]));
        buffer.insert(&[15, 60], &[1.5, 6.0]);
        assert_eq!(buffer.drain_piece(3), (vec![30, 40, 50], vec![3.0, 4.0, 5.0]));
        assert_eq!(buffer.drain_piece(3), (vec![60, 15], vec![6.0, 1.5]));
        assert!(buffer.is_empty());
        assert_eq!((buffer.stats.rows_out, buffer.stats.drains), (7, 3));
        // What is left stays readable and consistent after pieces moved rows around.
        buffer.insert(&[1, 2, 3], &[0.1, 0.2, 0.3]);
        buffer.drain_piece(1);
        assert_eq!((buffer.get(2), buffer.get(3), buffer.get(1)), (Some(&[0.2][..]), Some(&[0.3][..]), None));
    }

    #[test]
    fn keeps_the_newest_copy_and_drains_in_row_order() {
        let mut buffer = WriteBuffer::new(3, 2);
        buffer.insert(&[9, 4], &[9.0, 9.5, 4.0, 4.5]);
        buffer.insert(&[9], &[10.0, 10.5]);
        assert!(!buffer.is_full());
        assert_eq!(buffer.get(9), Some(&[10.0, 10.5][..]));
        assert_eq!(buffer.get(5), None);
        buffer.insert(&[1], &[1.0, 1.5]);
        assert!(buffer.is_full());
        let (rows, data) = buffer.drain_piece(usize::MAX);
        assert_eq!(rows, vec![1, 4, 9]);
        assert_eq!(data, vec![1.0, 1.5, 4.0, 4.5, 10.0, 10.5]);
        assert!(buffer.is_empty() && buffer.get(9).is_none());
        let s = buffer.stats;
        assert_eq!((s.rows_in, s.rows_replaced, s.rows_out, s.drains), (4, 1, 3, 1));
    }
}
