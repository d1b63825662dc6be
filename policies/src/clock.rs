//! CLOCK: FIFO with reinsertion of recently referenced rows (n-bit reference counters).

use crate::list::{Arena, IdMap, List, NIL};
use crate::pins::Pins;
use crate::{Access, EvictionPolicy, Request};

/// CLOCK / second chance (Corbató, "A paging experiment with the Multics system", MIT
/// Project MAC, 1968), generalised to an n-bit reference counter. A hit increments the
/// row's counter (saturating at `2^bits - 1`); eviction looks at the oldest row and,
/// while its counter is non-zero, decrements it and moves it to the newest end. With
/// `bits = 1` this is the classic one-reference-bit CLOCK. Same semantics as libCacheSim's
/// `Clock` (`cache/eviction/Clock.c`, `n-bit-counter`, `init-freq=0`); miss counts agree
/// exactly. The hand passes over a pinned row as over a referenced one (it moves to the
/// newest end) but leaves its counter alone: the pin says nothing of its references.
/// A whole turn over pinned rows only finds the cache full of them (the order is back
/// where it was): the miss is not admitted.
#[derive(Debug)]
pub struct Clock {
    capacity: usize,
    max_freq: u8,
    map: IdMap,
    arena: Arena<u8>,
    list: List,
    pins: Pins,
}

impl Clock {
    /// An empty CLOCK cache of `capacity` rows with `bits`-bit counters (1..=8).
    /// Panics if `capacity` is 0 or `bits` is out of range.
    pub fn new(capacity: usize, bits: u8) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        assert!((1..=8).contains(&bits), "bits must be in 1..=8");
        let max_freq = ((1u16 << bits) - 1) as u8;
        Clock { capacity, max_freq, map: IdMap::new(), arena: Arena::with_capacity(capacity), list: List::new(), pins: Pins::default() }
    }
}

impl EvictionPolicy for Clock {
    fn name(&self) -> &'static str {
        "clock"
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.list.len()
    }
    fn contains(&self, id: u64) -> bool {
        self.map.get(id) != NIL
    }
    #[inline]
    fn prefetch(&self, id: u64) {
        self.map.prefetch(id);
    }

    #[inline]
    fn access(&mut self, req: &Request) -> Access {
        let id = req.id;
        let s = self.map.get(id);
        if s != NIL {
            let f = self.arena.data_mut(s);
            if *f < self.max_freq {
                *f += 1;
            }
            return Access { hit: true, inserted: false, evicted: None };
        }
        let mut evicted = None;
        let slot = if self.list.len() >= self.capacity {
            // Pinned rows passed over in a row; a whole turn of them: nothing to evict.
            let mut pinned_run = 0;
            loop {
                let t = self.list.tail();
                if self.pins.contains(self.arena.id(t)) {
                    self.list.move_to_front(&mut self.arena, t);
                    pinned_run += 1;
                    if pinned_run == self.list.len() {
                        return Access::default();
                    }
                    continue;
                }
                pinned_run = 0;
                let f = self.arena.data_mut(t);
                if *f == 0 {
                    break;
                }
                *f -= 1;
                self.list.move_to_front(&mut self.arena, t);
            }
            let v = self.list.pop_back(&mut self.arena).expect("full cache has a tail");
            let vid = self.arena.id(v);
            self.map.clear(vid);
            evicted = Some(vid);
            self.arena.reuse(v, id, 0);
            v
        } else {
            self.arena.alloc(id, 0)
        };
        self.list.push_front(&mut self.arena, slot);
        self.map.set(id, slot);
        Access { hit: false, inserted: true, evicted }
    }

    fn pin(&mut self, id: u64) {
        self.pins.insert(id);
    }
    fn unpin_all(&mut self) {
        self.pins.clear();
    }

    fn remove(&mut self, id: u64) -> bool {
        let s = self.map.get(id);
        if s == NIL {
            return false;
        }
        self.list.unlink(&mut self.arena, s);
        self.arena.release(s);
        self.map.clear(id);
        true
    }
}
