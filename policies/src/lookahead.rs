//! Lookahead Belady: Belady's MIN restricted to the next accesses visible within a
//! window of future requests (the prefetch window), LRU for the rest.

use crate::belady::{FutureMeta, StampedHeap};
use crate::list::{Arena, IdMap, List, NIL};
use crate::pins::Pins;
use crate::{Access, EvictionPolicy, Request, NEVER};

/// Belady with a bounded view of the future, the policy a prefetching embedding engine can
/// actually run: it sees the next `window` requests (the batches already staged), so at
/// time `t` it knows a row's next use only if it falls at or before `t + window`. On a
/// miss it evicts the least recently used row among those whose next use is not yet
/// visible (the "unknown" set, ordered LRU); only when every resident row's next use is
/// visible does it evict the one used farthest in the future, as MIN would. Rows move
/// from unknown to known as time advances (a min-heap on next use), known rows sit in a
/// max-heap with lazy deletion: amortised O(log n) per request. With `window = 0` it is
/// exactly LRU; with a window at least as long as the trace it has Belady's miss count.
/// This is the "lookahead"/"prefetch-window" MIN variant used in studies of
/// future-aware caching (e.g. the oracle policies of Jain and Lin, "Back to the future:
/// leveraging Belady's algorithm for improved cache replacement", ISCA 2016, restricted
/// to a finite horizon); libCacheSim has no equivalent. Pinned rows are passed over: the
/// victim is the LRU unpinned unknown row, else the known unpinned row used farthest in
/// the future; none, and the miss is not admitted. The pinned rows found on the way are
/// set aside until the pins are lifted (unknown ones in their LRU order, filed back
/// behind the unknown list; known ones' heap entries, filed again), so that each is
/// passed over once, not at every eviction: the rows a batch has just looked up are
/// exactly those at the LRU end of the unknown list or on top of the known heap when
/// their next use is not visible or far.
#[derive(Debug)]
pub struct LookaheadBelady {
    capacity: usize,
    window: u64,
    len: usize,
    map: IdMap,
    arena: Arena<FutureMeta>,
    /// Resident rows whose next use is not visible yet, most recently used at the head.
    unknown: List,
    /// Unknown rows keyed by `u64::MAX - next`, so the soonest to become visible is on top.
    pending: StampedHeap,
    /// Known rows keyed by next use, farthest on top.
    known: StampedHeap,
    stamp: u32,
    pins: Pins,
    /// Pinned unknown rows set aside from the LRU end of `unknown` by
    /// [`LookaheadBelady::pick_victim`] (each older than every row left in `unknown`,
    /// most recently used at the head), and pinned known rows' heap entries: filed back
    /// by `unpin_all`.
    aside_unknown: List,
    aside_known: Vec<(u64, u32, u32)>,
}

impl LookaheadBelady {
    /// An empty cache of `capacity` rows seeing `window` requests ahead. Panics if
    /// `capacity` is 0.
    pub fn new(capacity: usize, window: u64) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        LookaheadBelady {
            capacity,
            window,
            len: 0,
            map: IdMap::new(),
            arena: Arena::with_capacity(capacity),
            unknown: List::new(),
            pending: StampedHeap::default(),
            known: StampedHeap::default(),
            stamp: 0,
            pins: Pins::default(),
            aside_unknown: List::new(),
            aside_known: Vec::new(),
        }
    }

    #[inline]
    fn next_stamp(&mut self) -> u32 {
        self.stamp = self.stamp.wrapping_add(1);
        self.stamp
    }

    #[inline]
    fn visible(&self, next: u64, horizon: u64) -> bool {
        next != NEVER && next <= horizon
    }

    /// Moves unknown rows whose next use is now within the horizon to the known heap.
    fn promote(&mut self, horizon: u64) {
        while let Some(k) = self.pending.peek_key() {
            let next = u64::MAX - k;
            if !self.visible(next, horizon) {
                break;
            }
            let (_, s, stamp) = self.pending.pop().expect("peeked");
            let m = *self.arena.data(s);
            if m.live && !m.known && m.stamp == stamp {
                self.unlink_unknown(s);
                self.arena.data_mut(s).known = true;
                self.known.push(next, s, stamp);
            }
        }
    }

    /// Files a linked-out live slot under known or unknown according to its next use.
    fn classify(&mut self, s: u32, horizon: u64) {
        let stamp = self.next_stamp();
        let next = self.arena.data(s).next;
        let known = self.visible(next, horizon);
        {
            let m = self.arena.data_mut(s);
            m.stamp = stamp;
            m.known = known;
        }
        if known {
            self.known.push(next, s, stamp);
        } else {
            self.unknown.push_front(&mut self.arena, s);
            self.pending.push(u64::MAX - next, s, stamp);
        }
    }

    /// Unlinks unknown slot `s` from the list that holds it.
    fn unlink_unknown(&mut self, s: u32) {
        if self.arena.data(s).aside {
            self.arena.data_mut(s).aside = false;
            self.aside_unknown.unlink(&mut self.arena, s);
        } else {
            self.unknown.unlink(&mut self.arena, s);
        }
    }

    /// Takes the victim out of its list or heap: the LRU unpinned unknown row, else the
    /// known unpinned row used farthest ahead ([`NIL`] if every resident row is pinned).
    /// Pinned rows met on the way are set aside until `unpin_all`.
    fn pick_victim(&mut self) -> u32 {
        loop {
            let v = self.unknown.tail();
            if v == NIL {
                break;
            }
            self.unknown.unlink(&mut self.arena, v);
            if !self.pins.contains(self.arena.id(v)) {
                return v;
            }
            self.arena.data_mut(v).aside = true;
            self.aside_unknown.push_front(&mut self.arena, v);
        }
        while let Some((next, s, stamp)) = self.known.pop() {
            let m = self.arena.data(s);
            if m.live && m.known && m.stamp == stamp && m.next == next {
                if self.pins.contains(self.arena.id(s)) {
                    self.aside_known.push((next, s, stamp));
                    continue;
                }
                return s;
            }
        }
        assert!(!self.pins.is_empty(), "a full cache has a victim");
        NIL
    }

    fn compact_if_needed(&mut self) {
        let limit = 2 * self.len + 64;
        if self.known.len() > limit {
            let arena = &self.arena;
            self.known.rebuild((0..arena.slots() as u32).filter_map(|s| {
                let m = arena.data(s);
                (m.live && m.known).then_some((m.next, s, m.stamp))
            }));
        }
        if self.pending.len() > limit {
            let arena = &self.arena;
            self.pending.rebuild((0..arena.slots() as u32).filter_map(|s| {
                let m = arena.data(s);
                (m.live && !m.known).then_some((u64::MAX - m.next, s, m.stamp))
            }));
        }
    }
}

impl EvictionPolicy for LookaheadBelady {
    fn name(&self) -> &'static str {
        "lookahead"
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn len(&self) -> usize {
        self.len
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
    }

    fn access(&mut self, req: &Request) -> Access {
        let horizon = req.time.saturating_add(self.window);
        self.promote(horizon);
        let id = req.id;
        let s = self.map.get(id);
        if s != NIL {
            if !self.arena.data(s).known {
                self.unlink_unknown(s);
            }
            self.arena.data_mut(s).next = req.next_access;
            self.classify(s, horizon);
            self.compact_if_needed();
            return Access { hit: true, inserted: false, evicted: None };
        }
        let mut evicted = None;
        let meta = FutureMeta { next: req.next_access, stamp: 0, live: true, known: false, aside: false };
        let slot = if self.len >= self.capacity {
            let v = self.pick_victim();
            if v == NIL {
                return Access::default();
            }
            let vid = self.arena.id(v);
            self.map.clear(vid);
            evicted = Some(vid);
            self.arena.reuse(v, id, meta);
            v
        } else {
            self.len += 1;
            self.arena.alloc(id, meta)
        };
        self.classify(slot, horizon);
        self.map.set(id, slot);
        self.compact_if_needed();
        Access { hit: false, inserted: true, evicted }
    }

    fn pin(&mut self, id: u64) {
        self.pins.insert(id);
    }
    fn unpin_all(&mut self) {
        self.pins.clear();
        // The set-aside unknown rows are older than every row in the list: behind it.
        let mut s = self.aside_unknown.head();
        while s != NIL {
            self.arena.data_mut(s).aside = false;
            s = self.arena.next(s);
        }
        self.unknown.append(&mut self.arena, &mut self.aside_unknown);
        for (next, s, stamp) in self.aside_known.drain(..) {
            self.known.push(next, s, stamp);
        }
    }

    fn remove(&mut self, id: u64) -> bool {
        let s = self.map.get(id);
        if s == NIL {
            return false;
        }
        if !self.arena.data(s).known {
            self.unlink_unknown(s);
        }
        self.arena.data_mut(s).live = false;
        self.arena.release(s);
        self.map.clear(id);
        self.len -= 1;
        true
    }
}
