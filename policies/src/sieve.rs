//! SIEVE: a FIFO queue with a moving hand that skips (and clears) visited rows.

use crate::list::{Arena, IdMap, List, NIL};
use crate::pins::Pins;
use crate::{Access, EvictionPolicy, Request};

/// SIEVE (Zhang, Yang, Yue, Vigfusson and Rashmi, "SIEVE is Simpler than LRU: an
/// Efficient Turn-Key Eviction Algorithm for Web Caches", NSDI 2024). New rows enter at
/// the head of a FIFO queue with a cleared visited bit; a hit sets the bit. The eviction
/// hand walks from the tail towards the head, clearing visited bits, evicts the first
/// unvisited row and stays where it stopped (wrapping to the tail at the head). Miss
/// counts are identical to libCacheSim's `Sieve` (`cache/eviction/Sieve.c`). The hand
/// passes over a pinned row as over a visited one but keeps its visited bit (the pin
/// says nothing of its use); a whole turn over pinned rows finds the cache full of them
/// and leaves the hand where it was: the miss is not admitted.
#[derive(Debug)]
pub struct Sieve {
    capacity: usize,
    map: IdMap,
    arena: Arena<bool>,
    list: List,
    /// Next slot the hand examines ([`NIL`]: start from the tail).
    hand: u32,
    pins: Pins,
}

impl Sieve {
    /// An empty SIEVE cache of `capacity` rows. Panics if `capacity` is 0.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        Sieve { capacity, map: IdMap::new(), arena: Arena::with_capacity(capacity), list: List::new(), hand: NIL, pins: Pins::default() }
    }
}

impl EvictionPolicy for Sieve {
    fn name(&self) -> &'static str {
        "sieve"
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
            *self.arena.data_mut(s) = true;
            return Access { hit: true, inserted: false, evicted: None };
        }
        let mut evicted = None;
        let slot = if self.list.len() >= self.capacity {
            let mut n = if self.hand == NIL { self.list.tail() } else { self.hand };
            // Pinned rows passed over in a row; a whole turn of them: nothing to evict.
            let mut pinned_run = 0;
            loop {
                if self.pins.contains(self.arena.id(n)) {
                    pinned_run += 1;
                    if pinned_run == self.list.len() {
                        return Access::default();
                    }
                } else {
                    pinned_run = 0;
                    let visited = self.arena.data_mut(n);
                    if !*visited {
                        break;
                    }
                    *visited = false;
                }
                n = self.arena.prev(n);
                if n == NIL {
                    n = self.list.tail();
                }
            }
            self.hand = self.arena.prev(n);
            self.list.unlink(&mut self.arena, n);
            let vid = self.arena.id(n);
            self.map.clear(vid);
            evicted = Some(vid);
            self.arena.reuse(n, id, false);
            n
        } else {
            self.arena.alloc(id, false)
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
        if self.hand == s {
            self.hand = self.arena.prev(s);
        }
        self.list.unlink(&mut self.arena, s);
        self.arena.release(s);
        self.map.clear(id);
        true
    }
}
