//! ARC: adaptive replacement between a recency list and a frequency list, tuned by
//! ghost hits.

use crate::list::{Arena, IdMap, List, NIL};
use crate::pins::Pins;
use crate::{Access, EvictionPolicy, Request};

const T1: u8 = 0;
const T2: u8 = 1;
const B1: u8 = 2;
const B2: u8 = 3;

/// Adaptive Replacement Cache (Megiddo and Modha, "ARC: A Self-Tuning, Low Overhead
/// Replacement Cache", FAST 2003). T1 holds rows seen once recently, T2 rows seen at
/// least twice; the ghost lists B1/B2 remember ids recently evicted from each. A ghost hit
/// in B1 grows the target size `p` of T1 by `max(|B2|/|B1|, 1)`, one in B2 shrinks it by
/// `max(|B1|/|B2|, 1)` (floating point, as libCacheSim does), and the ghost row re-enters
/// in T2. Follows libCacheSim's `ARC` (`cache/eviction/ARC.c`) step for step, including
/// its REPLACE rule (evict from T1 when `|T1| > p`, or `|T1| = p` on a B2 hit, or T2 is
/// empty) and ghost trimming only when the cache is full; miss counts agree exactly.
/// Pinned rows are passed over: REPLACE takes the least recently used unpinned row of
/// the list its rule picks, or of the other list when that one holds only pinned rows.
/// A miss that finds every resident row pinned is not admitted and changes nothing
/// (not even `p` or the ghost lists).
#[derive(Debug)]
pub struct Arc {
    capacity: usize,
    p: f64,
    map: IdMap,
    /// Slot data = which list the slot is in.
    arena: Arena<u8>,
    lists: [List; 4],
    pins: Pins,
}

impl Arc {
    /// An empty ARC cache of `capacity` rows. Panics if `capacity` is 0.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        Arc {
            capacity,
            p: 0.0,
            map: IdMap::new(),
            arena: Arena::with_capacity(2 * capacity),
            lists: [List::new(); 4],
            pins: Pins::default(),
        }
    }

    #[inline]
    fn n(&self, l: u8) -> usize {
        self.lists[l as usize].len()
    }

    #[inline]
    fn unlink(&mut self, s: u32) {
        let l = *self.arena.data(s) as usize;
        self.lists[l].unlink(&mut self.arena, s);
    }

    #[inline]
    fn push(&mut self, s: u32, l: u8) {
        *self.arena.data_mut(s) = l;
        self.lists[l as usize].push_front(&mut self.arena, s);
    }

    /// Drops the LRU ghost of list `l` entirely.
    fn drop_ghost_tail(&mut self, l: u8) {
        let g = self.lists[l as usize].pop_back(&mut self.arena).expect("ghost list non-empty");
        self.map.clear(self.arena.id(g));
        self.arena.release(g);
    }

    /// Moves the LRU unpinned row of `from` to the head of ghost list `to`; returns its
    /// id, or `None` if `from` holds only pinned rows.
    fn demote(&mut self, from: u8, to: u8) -> Option<u64> {
        let v = self.lists[from as usize].pop_back_unpinned(&mut self.arena, &self.pins)?;
        self.push(v, to);
        Some(self.arena.id(v))
    }

    /// Whether the cache holds only pinned rows (a miss then cannot make room).
    fn all_pinned(&self) -> bool {
        !self.pins.is_empty()
            && self.lists[T1 as usize].last_unpinned(&self.arena, &self.pins) == NIL
            && self.lists[T2 as usize].last_unpinned(&self.arena, &self.pins) == NIL
    }

    /// The paper's REPLACE: evicts a resident row into its ghost list (an unpinned one:
    /// from the other list when the rule's holds only pinned rows).
    fn replace(&mut self, hit_in_b2: bool) -> u64 {
        let t1 = self.n(T1);
        let t1f = t1 as f64;
        let demoted = if (t1 > 0 && (t1f > self.p || (t1f == self.p && hit_in_b2))) || self.n(T2) == 0 {
            self.demote(T1, B1).or_else(|| self.demote(T2, B2))
        } else {
            self.demote(T2, B2).or_else(|| self.demote(T1, B1))
        };
        demoted.expect("a full cache with an unpinned row")
    }

    /// Case IV of the paper (the request missed every list), cache full.
    fn evict_cold_miss(&mut self) -> u64 {
        let c = self.capacity;
        if self.n(T1) + self.n(B1) + 1 > c {
            if self.n(B1) > 0 {
                self.drop_ghost_tail(B1);
                self.replace(false)
            } else {
                // T1 holds the whole cache: evict its LRU (unpinned) row without a ghost.
                let v = self.lists[T1 as usize].pop_back_unpinned(&mut self.arena, &self.pins).expect("an unpinned row");
                let vid = self.arena.id(v);
                self.map.clear(vid);
                self.arena.release(v);
                vid
            }
        } else {
            if self.n(T1) + self.n(B1) + self.n(T2) + self.n(B2) >= 2 * c && self.n(B2) > 0 {
                self.drop_ghost_tail(B2);
            }
            self.replace(false)
        }
    }
}

impl EvictionPolicy for Arc {
    fn name(&self) -> &'static str {
        "arc"
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.n(T1) + self.n(T2)
    }
    fn contains(&self, id: u64) -> bool {
        let s = self.map.get(id);
        s != NIL && *self.arena.data(s) <= T2
    }
    #[inline]
    fn prefetch(&self, id: u64) {
        self.map.prefetch(id);
    }
    #[inline]
    fn prefetch_slot(&self, id: u64) {
        self.arena.prefetch(self.map.get(id));
    }

    fn access(&mut self, req: &Request) -> Access {
        let id = req.id;
        let s = self.map.get(id);
        // 0: not seen, 1: ghost hit in B1, 2: ghost hit in B2.
        let ghost = match (s != NIL).then(|| *self.arena.data(s)) {
            Some(T1) => {
                self.unlink(s);
                self.push(s, T2);
                return Access { hit: true, inserted: false, evicted: None };
            }
            Some(T2) => {
                self.lists[T2 as usize].move_to_front(&mut self.arena, s);
                return Access { hit: true, inserted: false, evicted: None };
            }
            Some(B1) => 1u8,
            Some(_) => 2,
            None => 0,
        };
        if self.len() >= self.capacity && self.all_pinned() {
            return Access::default();
        }
        if ghost != 0 {
            if ghost == 1 {
                let delta = (self.n(B2) as f64 / self.n(B1) as f64).max(1.0);
                self.p = (self.p + delta).min(self.capacity as f64);
            } else {
                let delta = (self.n(B1) as f64 / self.n(B2) as f64).max(1.0);
                self.p = (self.p - delta).max(0.0);
            }
            self.unlink(s);
            self.map.clear(id);
            self.arena.release(s);
        }
        let mut evicted = None;
        if self.len() >= self.capacity {
            evicted = Some(if ghost != 0 { self.replace(ghost == 2) } else { self.evict_cold_miss() });
        }
        let slot = self.arena.alloc(id, T1);
        self.push(slot, if ghost != 0 { T2 } else { T1 });
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
        if s == NIL || *self.arena.data(s) > T2 {
            return false;
        }
        self.unlink(s);
        self.map.clear(id);
        self.arena.release(s);
        true
    }
}
