//! FIFO: evict the row that was inserted first.

use crate::list::{Arena, IdMap, List, NIL};
use crate::pins::Pins;
use crate::{Access, EvictionPolicy, Request};

/// First-in-first-out eviction (Belady, "A study of replacement algorithms for a
/// virtual-storage computer", IBM Systems Journal, 1966): hits change nothing, a miss
/// evicts the oldest insertion. Miss counts are identical to libCacheSim's `FIFO`
/// (`cache/eviction/FIFO.c`). Pinned rows are passed over: the oldest unpinned insertion
/// goes, and the order is otherwise kept.
#[derive(Debug)]
pub struct Fifo {
    capacity: usize,
    map: IdMap,
    arena: Arena<()>,
    list: List,
    pins: Pins,
}

impl Fifo {
    /// An empty FIFO cache of `capacity` rows. Panics if `capacity` is 0.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        Fifo { capacity, map: IdMap::new(), arena: Arena::with_capacity(capacity), list: List::new(), pins: Pins::default() }
    }
}

impl EvictionPolicy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
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
        if self.map.get(id) != NIL {
            return Access { hit: true, inserted: false, evicted: None };
        }
        let mut evicted = None;
        let slot = if self.list.len() >= self.capacity {
            // The oldest unpinned row; none: the cache is full of pinned rows.
            let Some(v) = self.list.pop_back_unpinned(&mut self.arena, &self.pins) else { return Access::default() };
            let vid = self.arena.id(v);
            self.map.clear(vid);
            evicted = Some(vid);
            self.arena.reuse(v, id, ());
            v
        } else {
            self.arena.alloc(id, ())
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
