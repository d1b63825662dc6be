//! Resident: the policy of a tier that can hold every row of its table. A row is
//! admitted on its first request and stays; nothing is ever evicted, so no eviction
//! order is kept. Every policy that evicts only when full
//! ([`PolicyConfig::evicts_only_when_full`](crate::PolicyConfig::evicts_only_when_full))
//! answers each request exactly so at such a capacity (tests/resident.rs holds each to
//! it), and [`PolicyConfig::build_for_rows`](crate::PolicyConfig::build_for_rows) gives
//! this one in its place: a hit is one bit test where LRU, say, would relink a list node
//! it will never need, FBGEMM's "everything in host memory" placement.

use crate::{Access, EvictionPolicy, Request};

pub struct Resident {
    capacity: usize,
    /// Bit `id` set: row `id` is resident.
    bits: Vec<u64>,
    len: usize,
}

impl Resident {
    /// A cache of `capacity` rows; it never evicts, and refuses a row only when full.
    pub fn new(capacity: usize) -> Self {
        Resident { capacity, bits: Vec::new(), len: 0 }
    }

    fn word(id: u64) -> (usize, u64) {
        ((id / 64) as usize, 1u64 << (id % 64))
    }
}

impl EvictionPolicy for Resident {
    fn name(&self) -> &'static str {
        "resident"
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.len
    }
    fn contains(&self, id: u64) -> bool {
        let (word, bit) = Self::word(id);
        self.bits.get(word).is_some_and(|w| w & bit != 0)
    }

    #[inline]
    fn access(&mut self, req: &Request) -> Access {
        if self.contains(req.id) {
            return Access { hit: true, inserted: false, evicted: None };
        }
        if self.len == self.capacity {
            return Access::default();
        }
        let (word, bit) = Self::word(req.id);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        self.bits[word] |= bit;
        self.len += 1;
        Access { hit: false, inserted: true, evicted: None }
    }

    /// Resident never evicts (a miss that finds it full is not admitted), so a pin holds
    /// with nothing to record.
    fn pin(&mut self, _id: u64) {}
    fn unpin_all(&mut self) {}

    fn remove(&mut self, id: u64) -> bool {
        let (word, bit) = Self::word(id);
        match self.bits.get_mut(word) {
            Some(w) if *w & bit != 0 => {
                *w &= !bit;
                self.len -= 1;
                true
            }
            _ => false,
        }
    }
}
