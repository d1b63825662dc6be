//! LRU: evict the least recently used row.

use crate::list::{Arena, IdMap, List, NIL};
use crate::pins::Pins;
use crate::{Access, EvictionPolicy, Request};

/// Least-recently-used eviction, the classic stack algorithm (Mattson, Gecsei, Slutz and
/// Traiger, "Evaluation techniques for storage hierarchies", IBM Systems Journal, 1970).
/// A hit moves the row to the head of a recency list, a miss evicts the tail. Miss counts
/// are identical to libCacheSim's `LRU` (`cache/eviction/LRU.c`). Pinned rows are passed
/// over: the least recently used unpinned row goes, and the order is otherwise kept.
#[derive(Debug)]
pub struct Lru {
    capacity: usize,
    map: IdMap,
    arena: Arena<()>,
    list: List,
    pins: Pins,
}

impl Lru {
    /// An empty LRU cache of `capacity` rows. Panics if `capacity` is 0 (use
    /// [`crate::PolicyConfig::build`] for a checked constructor).
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        Lru { capacity, map: IdMap::new(), arena: Arena::with_capacity(capacity), list: List::new(), pins: Pins::default() }
    }
}

impl EvictionPolicy for Lru {
    fn name(&self) -> &'static str {
        "lru"
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
            self.list.move_to_front(&mut self.arena, s);
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
