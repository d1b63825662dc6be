//! W-TinyLFU: a small LRU window in front of a segmented-LRU main cache, with a
//! frequency sketch deciding which of the window's and main's victims stays.

use crate::admission::{CountingSketch, KeyHash};
use crate::list::{Arena, IdMap, List, NIL};
use crate::pins::Pins;
use crate::{Access, EvictionPolicy, Request};

const WINDOW: u8 = 0;
const PROBATION: u8 = 1;
const PROTECTED: u8 = 2;

/// Window TinyLFU (Einziger, Eytan, Friedman and Manes, "Adaptive Software Cache
/// Management", Middleware 2018; TinyLFU: Einziger, Friedman and Manes, ACM ToS 2017), the
/// policy of Caffeine. Misses enter an LRU window (`window_ratio` of the capacity); the
/// main cache is a segmented LRU (probation + protected, `protected_ratio` of main). When
/// the cache is full, the window's LRU row moves to main if main has room; otherwise it
/// competes with main's victim (probation tail, or protected tail when probation is
/// empty) and the one with the higher sketch estimate stays (ties keep main's). The
/// frequency sketch counts insertions, main hits and window victims, and is halved after
/// `32 x main size` main hits. Follows libCacheSim's `WTinyLFU` (`cache/eviction/WTinyLFU.c`,
/// main = `SLRU` with `seg-size=1:4`, sketch = `minimalIncrementCBF` with error 0.001,
/// same hash functions), so miss counts agree exactly wherever libCacheSim's
/// configuration is valid (capacity of at least `1 / window_ratio` rows and non-empty
/// SLRU segments; below that libCacheSim's window is empty and it caches nothing or
/// rejects the sizes, while here the window and each segment keep at least one row).
///
/// Pinned rows are passed over as victims (moving between the window and main's
/// segments is no eviction, so they still do): the window's candidate is its LRU
/// unpinned row, main's the LRU unpinned row of probation, else of protected; a side
/// with no unpinned row loses no duel, the other side's candidate leaves. A miss that
/// finds every resident row pinned is not admitted and changes nothing, and a hit's
/// rebalancing evicts only unpinned probation rows (probation may stay over its size).
#[derive(Debug)]
pub struct WTinyLfu {
    capacity: usize,
    main_cap: usize,
    seg_max: [usize; 2],
    sketch: CountingSketch,
    main_hits: u64,
    decay_every: u64,
    map: IdMap,
    arena: Arena<Meta>,
    /// Window, probation, protected.
    lists: [List; 3],
    pins: Pins,
}

/// A slot's segment and its row's sketch hash, kept so that the sketch is probed for a
/// resident row (a main hit, a duel) without hashing its id again.
#[derive(Clone, Copy, Debug)]
struct Meta {
    segment: u8,
    hash: KeyHash,
}

impl WTinyLfu {
    /// An empty W-TinyLFU cache. Panics if `capacity` is 0 or a ratio is outside `[0, 1]`.
    pub fn new(capacity: usize, window_ratio: f64, protected_ratio: f64) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        assert!((0.0..1.0).contains(&window_ratio), "window_ratio must be in [0, 1)");
        assert!((0.0..=1.0).contains(&protected_ratio), "protected_ratio must be in [0, 1]");
        let window = ((capacity as f64 * window_ratio) as usize).clamp(1, capacity);
        let main_cap = capacity - window;
        let m = main_cap as f64;
        // floor of the exact products (libCacheSim computes 1/5 * m and 4/5 * m).
        // Segments of 0 rows are invalid in libCacheSim; here probation keeps at least one
        // row and protected too once main has two.
        let mut protected = (protected_ratio * m + 1e-9) as usize;
        let mut probation = ((1.0 - protected_ratio) * m + 1e-9) as usize;
        if main_cap >= 1 && probation == 0 {
            probation = 1;
            protected = protected.min(main_cap - 1);
        }
        if main_cap >= 2 && protected == 0 {
            protected = 1;
            probation = probation.min(main_cap - 1);
        }
        WTinyLfu {
            capacity,
            main_cap,
            seg_max: [probation, protected],
            sketch: CountingSketch::for_entries(main_cap, 0.001),
            main_hits: 0,
            decay_every: 32 * main_cap as u64,
            map: IdMap::new(),
            arena: Arena::with_capacity(capacity),
            lists: [List::new(); 3],
            pins: Pins::default(),
        }
    }

    #[inline]
    fn n(&self, l: u8) -> usize {
        self.lists[l as usize].len()
    }

    #[inline]
    fn main_len(&self) -> usize {
        self.n(PROBATION) + self.n(PROTECTED)
    }

    #[inline]
    fn push(&mut self, s: u32, l: u8) {
        self.arena.data_mut(s).segment = l;
        self.lists[l as usize].push_front(&mut self.arena, s);
    }

    #[inline]
    fn unlink(&mut self, s: u32) {
        let l = self.arena.data(s).segment;
        self.lists[l as usize].unlink(&mut self.arena, s);
    }

    /// The LRU unpinned row of segment `l` ([`NIL`] if none).
    #[inline]
    fn last_unpinned(&self, l: u8) -> u32 {
        self.lists[l as usize].last_unpinned(&self.arena, &self.pins)
    }

    /// Main's next victim: the probation tail, else the protected tail (unpinned rows
    /// only; [`NIL`] if main holds none).
    fn main_victim(&self) -> u32 {
        match self.last_unpinned(PROBATION) {
            NIL => self.last_unpinned(PROTECTED),
            v => v,
        }
    }

    /// Whether the cache holds only pinned rows (a miss then cannot make room).
    fn all_pinned(&self) -> bool {
        !self.pins.is_empty() && self.last_unpinned(WINDOW) == NIL && self.main_victim() == NIL
    }

    /// Evicts slot `v` from the cache; returns its id.
    fn evict_slot(&mut self, v: u32) -> u64 {
        self.unlink(v);
        let vid = self.arena.id(v);
        self.map.clear(vid);
        self.arena.release(v);
        vid
    }

    /// Evicts main's victim from the cache; returns its id.
    fn main_evict(&mut self) -> Option<u64> {
        match self.main_victim() {
            NIL => None,
            v => Some(self.evict_slot(v)),
        }
    }

    /// Inserts the unlinked slot `s` into the lowest main segment with room.
    fn main_insert(&mut self, s: u32) {
        let seg = if self.n(PROBATION) < self.seg_max[0] {
            PROBATION
        } else if self.n(PROTECTED) < self.seg_max[1] {
            PROTECTED
        } else {
            PROBATION
        };
        self.push(s, seg);
    }

    /// A hit in main: promote or refresh; may (rarely, through segment rounding) evict.
    fn main_hit(&mut self, s: u32) -> Option<u64> {
        let seg = self.arena.data(s).segment;
        if seg == PROTECTED || self.seg_max[1] == 0 {
            self.lists[seg as usize].move_to_front(&mut self.arena, s);
            return None;
        }
        self.unlink(s);
        self.push(s, PROTECTED);
        let mut evicted = None;
        while self.n(PROTECTED) > self.seg_max[1] {
            let t = self.lists[PROTECTED as usize].pop_back(&mut self.arena).expect("over-full");
            self.push(t, PROBATION);
            while self.n(PROBATION) > self.seg_max[0] {
                match self.last_unpinned(PROBATION) {
                    NIL => break,
                    v => evicted = Some(self.evict_slot(v)),
                }
            }
        }
        evicted
    }

    /// Makes room for one row; returns the id that left the cache.
    fn evict(&mut self) -> Option<u64> {
        loop {
            let tail = self.lists[WINDOW as usize].tail();
            if tail != NIL && self.main_len() < self.main_cap {
                let hash = self.arena.data(tail).hash;
                self.unlink(tail);
                self.main_insert(tail);
                self.sketch.add(hash);
                continue;
            }
            let w = self.last_unpinned(WINDOW);
            if w == NIL {
                return self.main_evict();
            }
            let window_hash = self.arena.data(w).hash;
            // Main's estimate first: the window victim's count, taken with its own
            // increment, must not show in it when the two share a counter.
            let m = self.main_victim();
            let keep_window = if m == NIL {
                self.sketch.add(window_hash);
                false
            } else {
                let main_estimate = self.sketch.estimate(self.arena.data(m).hash);
                self.sketch.add_returning_previous(window_hash) > main_estimate
            };
            let out = if keep_window {
                let out = self.main_evict();
                self.unlink(w);
                self.main_insert(w);
                out
            } else {
                Some(self.evict_slot(w))
            };
            self.prefetch_next_duel();
            return out;
        }
    }

    /// Starts fetching the sketch counters of the next eviction's two candidates (the
    /// window's and main's victims), which the next miss compares.
    #[inline]
    fn prefetch_next_duel(&self) {
        let w = self.lists[WINDOW as usize].tail();
        if w != NIL {
            self.sketch.prefetch(self.arena.data(w).hash);
        }
        let m = self.main_victim();
        if m != NIL {
            self.sketch.prefetch(self.arena.data(m).hash);
        }
    }
}

impl EvictionPolicy for WTinyLfu {
    fn name(&self) -> &'static str {
        "tinylfu"
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.n(WINDOW) + self.main_len()
    }
    fn contains(&self, id: u64) -> bool {
        self.map.get(id) != NIL
    }
    #[inline]
    fn prefetch(&self, id: u64) {
        self.map.prefetch(id);
    }
    #[inline]
    fn prefetch_slot(&self, id: u64) {
        self.arena.prefetch(self.map.get(id));
        self.sketch.prefetch(CountingSketch::hash(id));
    }

    fn access(&mut self, req: &Request) -> Access {
        let id = req.id;
        let s = self.map.get(id);
        if s != NIL {
            if self.arena.data(s).segment == WINDOW {
                self.lists[WINDOW as usize].move_to_front(&mut self.arena, s);
                return Access { hit: true, inserted: false, evicted: None };
            }
            let hash = self.arena.data(s).hash;
            let evicted = self.main_hit(s);
            self.sketch.add(hash);
            self.main_hits += 1;
            if self.main_hits >= self.decay_every {
                self.main_hits = 0;
                self.sketch.halve();
            }
            return Access { hit: true, inserted: false, evicted };
        }
        if self.len() >= self.capacity && self.all_pinned() {
            return Access::default();
        }
        let mut evicted = None;
        while self.len() >= self.capacity {
            evicted = self.evict();
        }
        let hash = CountingSketch::hash(id);
        let slot = self.arena.alloc(id, Meta { segment: WINDOW, hash });
        self.push(slot, WINDOW);
        self.map.set(id, slot);
        self.sketch.add(hash);
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
        self.unlink(s);
        self.map.clear(id);
        self.arena.release(s);
        true
    }
}
