//! Maps arbitrary trace keys to dense row ids (0, 1, 2, ... in first-seen order), so
//! the policies index arrays instead of hashing.

use rustc_hash::FxHashMap;

/// Keys below this are looked up in a direct table grown to the largest key seen
/// (4 bytes per slot); larger keys go through a hash map.
const DIRECT_LIMIT: u64 = 1 << 27;
const ABSENT: u32 = u32::MAX;

/// Assigns each distinct key the next dense id.
#[derive(Default)]
pub struct KeyRemapper {
    direct: Vec<u32>,
    hashed: FxHashMap<u64, u32>,
    distinct: u32,
}

impl KeyRemapper {
    pub fn new() -> Self {
        Self::default()
    }

    /// Distinct keys seen so far.
    pub fn distinct(&self) -> u64 {
        u64::from(self.distinct)
    }

    /// Maps a chunk of keys to dense ids into `out` (cleared first). Looks ahead in
    /// the chunk to prefetch the direct-table entries, whose cache misses otherwise
    /// dominate reading a trace.
    pub fn map_chunk(&mut self, keys: impl ExactSizeIterator<Item = u64> + Clone, out: &mut Vec<u64>) {
        const AHEAD: usize = 64;
        out.clear();
        out.reserve(keys.len());
        let mut ahead = keys.clone().skip(AHEAD);
        for key in keys {
            if let Some(next) = ahead.next() {
                strata_policies::prefetch_element(&self.direct, next as usize);
            }
            out.push(self.dense_id(key));
        }
    }

    /// The dense id of `key`, assigning a new one on first sight.
    #[inline]
    pub fn dense_id(&mut self, key: u64) -> u64 {
        if key < DIRECT_LIMIT {
            let slot = key as usize;
            if slot >= self.direct.len() {
                let grown = (slot + 1).max(self.direct.len() * 2).min(DIRECT_LIMIT as usize);
                self.direct.resize(grown, ABSENT);
            }
            let id = &mut self.direct[slot];
            if *id == ABSENT {
                *id = self.distinct;
                self.distinct += 1;
            }
            u64::from(*id)
        } else {
            let next = self.distinct;
            let id = *self.hashed.entry(key).or_insert(next);
            if id == next {
                self.distinct += 1;
            }
            u64::from(id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::KeyRemapper;

    #[test]
    fn assigns_dense_ids_in_first_seen_order() {
        let mut remap = KeyRemapper::new();
        let keys = [10, u64::MAX, 3, 10, 1 << 40, 3, u64::MAX];
        let ids: Vec<u64> = keys.iter().map(|&k| remap.dense_id(k)).collect();
        assert_eq!(ids, vec![0, 1, 2, 0, 3, 2, 1]);
        assert_eq!(remap.distinct(), 4);
    }
}
