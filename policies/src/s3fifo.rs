//! S3-FIFO: a small probationary FIFO, a main FIFO with reinsertion, and a ghost FIFO.

use crate::list::{Arena, IdMap, List, NIL};
use crate::pins::Pins;
use crate::{Access, EvictionPolicy, Request};

const SMALL: u8 = 0;
const MAIN: u8 = 1;
const GHOST: u8 = 2;

#[derive(Clone, Copy, Debug)]
struct Meta {
    queue: u8,
    freq: u32,
}

/// S3-FIFO (Yang, Zhang, Qiu, Yue and Rashmi, "FIFO queues are all you need for cache
/// eviction", SOSP 2023). New rows enter a small FIFO (`small_ratio` of the capacity);
/// a row leaving the small queue moves to the main FIFO if it was hit at least
/// `move_to_main_threshold` times there, otherwise it is evicted and its id kept in a ghost
/// FIFO (`ghost_ratio` of the capacity). A miss that hits the ghost goes straight to main.
/// The main FIFO reinserts rows with a non-zero 2-bit counter (decrementing it) and evicts
/// the first zero. Follows libCacheSim's current `S3FIFO` (`cache/eviction/S3FIFO.c`):
/// queue sizes are truncated (`small = floor(c * small_ratio)`, main gets the rest), the
/// main queue is drained when it is over its size or the small queue is empty, and until
/// the first eviction rows overflowing a full small queue go to main. Deviation: the
/// small queue is at least one row (libCacheSim caches nothing when it rounds to 0 or 1,
/// i.e. below 20 rows at the default ratio).
///
/// Pinned rows are passed over: the small queue takes its oldest unpinned row (pinned
/// ones keep their place), the main queue moves a pinned row to its head as it would a
/// hit one but leaves its counter alone, and when the queue the rule picks holds only
/// pinned rows the other one gives the victim. A miss that finds every resident row
/// pinned is not admitted and changes nothing (a ghost stays a ghost).
#[derive(Debug)]
pub struct S3Fifo {
    capacity: usize,
    small_cap: usize,
    main_cap: usize,
    ghost_cap: usize,
    threshold: u32,
    has_evicted: bool,
    map: IdMap,
    arena: Arena<Meta>,
    queues: [List; 3],
    pins: Pins,
}

impl S3Fifo {
    /// An empty S3-FIFO cache. Panics if `capacity` is 0 or a ratio is outside `[0, 1]`.
    pub fn new(capacity: usize, small_ratio: f64, ghost_ratio: f64, move_to_main_threshold: u32) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        assert!((0.0..1.0).contains(&small_ratio), "small_ratio must be in [0, 1)");
        assert!(ghost_ratio >= 0.0 && ghost_ratio.is_finite(), "ghost_ratio must be >= 0");
        let small_cap = ((capacity as f64 * small_ratio) as usize).max(1);
        let main_cap = capacity.saturating_sub(small_cap);
        let ghost_cap = (capacity as f64 * ghost_ratio) as usize;
        S3Fifo {
            capacity,
            small_cap,
            main_cap,
            ghost_cap,
            threshold: move_to_main_threshold,
            has_evicted: false,
            map: IdMap::new(),
            arena: Arena::with_capacity(capacity + ghost_cap),
            queues: [List::new(); 3],
            pins: Pins::default(),
        }
    }

    #[inline]
    fn n(&self, q: u8) -> usize {
        self.queues[q as usize].len()
    }

    #[inline]
    fn push(&mut self, s: u32, q: u8, freq: u32) {
        *self.arena.data_mut(s) = Meta { queue: q, freq };
        self.queues[q as usize].push_front(&mut self.arena, s);
    }

    /// Remembers `id` in the ghost FIFO, reusing slot `s` (already unlinked).
    fn add_ghost(&mut self, s: u32) {
        if self.ghost_cap == 0 {
            self.map.clear(self.arena.id(s));
            self.arena.release(s);
            return;
        }
        if self.n(GHOST) >= self.ghost_cap {
            let g = self.queues[GHOST as usize].pop_back(&mut self.arena).expect("ghost non-empty");
            self.map.clear(self.arena.id(g));
            self.arena.release(g);
        }
        self.push(s, GHOST, 0);
    }

    /// Evicts one unpinned row from the small queue (promoting hot rows to main on the
    /// way); `None` when it holds no unpinned row that is not promoted.
    fn evict_small(&mut self) -> Option<u64> {
        while let Some(v) = self.queues[SMALL as usize].pop_back_unpinned(&mut self.arena, &self.pins) {
            if self.arena.data(v).freq >= self.threshold {
                self.push(v, MAIN, 0);
            } else {
                let vid = self.arena.id(v);
                self.add_ghost(v);
                return Some(vid);
            }
        }
        None
    }

    /// Evicts one row from the main queue (reinserting rows with a non-zero counter, and
    /// pinned rows); `None` when it holds only pinned rows.
    fn evict_main(&mut self) -> Option<u64> {
        // Pinned rows reinserted in a row; a whole turn of them: nothing to evict.
        let mut pinned_run = 0;
        while let Some(v) = self.queues[MAIN as usize].pop_back(&mut self.arena) {
            if self.pins.contains(self.arena.id(v)) {
                self.queues[MAIN as usize].push_front(&mut self.arena, v);
                pinned_run += 1;
                if pinned_run == self.n(MAIN) {
                    return None;
                }
                continue;
            }
            pinned_run = 0;
            let f = self.arena.data(v).freq;
            if f >= 1 {
                self.push(v, MAIN, f.min(3) - 1);
            } else {
                let vid = self.arena.id(v);
                self.map.clear(vid);
                self.arena.release(v);
                return Some(vid);
            }
        }
        None
    }

    /// Evicts one row from the queue the rule picks, else (it holds only pinned rows, or
    /// the small queue only promoted rows) from the other; `None` when neither evicted.
    fn evict(&mut self) -> Option<u64> {
        self.has_evicted = true;
        if self.n(MAIN) > self.main_cap || self.n(SMALL) == 0 {
            self.evict_main().or_else(|| self.evict_small())
        } else {
            self.evict_small().or_else(|| self.evict_main())
        }
    }

    /// Whether the cache holds only pinned rows (a miss then cannot make room).
    fn all_pinned(&self) -> bool {
        !self.pins.is_empty()
            && self.queues[SMALL as usize].last_unpinned(&self.arena, &self.pins) == NIL
            && self.queues[MAIN as usize].last_unpinned(&self.arena, &self.pins) == NIL
    }
}

impl EvictionPolicy for S3Fifo {
    fn name(&self) -> &'static str {
        "s3fifo"
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.n(SMALL) + self.n(MAIN)
    }
    fn contains(&self, id: u64) -> bool {
        let s = self.map.get(id);
        s != NIL && self.arena.data(s).queue != GHOST
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
        if s != NIL {
            let m = self.arena.data_mut(s);
            if m.queue != GHOST {
                m.freq = m.freq.saturating_add(1);
                return Access { hit: true, inserted: false, evicted: None };
            }
        }
        if self.len() >= self.capacity && self.all_pinned() {
            return Access::default();
        }
        // A row the map knows and the cache does not hold is a ghost.
        let ghost_hit = s != NIL;
        if ghost_hit {
            self.queues[GHOST as usize].unlink(&mut self.arena, s);
            self.map.clear(id);
            self.arena.release(s);
        }
        let mut evicted = None;
        while self.len() >= self.capacity {
            // `None`: the small queue only moved rows to main while main held only pinned
            // rows; the next round drains main.
            if let Some(v) = self.evict() {
                evicted = Some(v);
            }
        }
        let slot = self.arena.alloc(id, Meta { queue: SMALL, freq: 0 });
        let q = if ghost_hit || (!self.has_evicted && self.n(SMALL) >= self.small_cap) { MAIN } else { SMALL };
        self.push(slot, q, 0);
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
        let q = self.arena.data(s).queue;
        self.queues[q as usize].unlink(&mut self.arena, s);
        self.map.clear(id);
        self.arena.release(s);
        q != GHOST
    }
}
