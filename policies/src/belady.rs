//! Offline Belady (MIN): evict the resident row whose next use is farthest in the future.

use crate::list::{Arena, IdMap, NIL};
use crate::pins::Pins;
use crate::{Access, EvictionPolicy, Request, NEVER};

/// Per-slot metadata of the future-aware policies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FutureMeta {
    pub(crate) next: u64,
    /// Taken from a policy-wide counter whenever `next` changes or the slot is reused or
    /// freed: heap entries that carry another stamp are stale (lazy deletion).
    pub(crate) stamp: u32,
    pub(crate) live: bool,
    /// Lookahead Belady only: the next use is within the window.
    pub(crate) known: bool,
    /// Lookahead Belady only: an unknown row, pinned, set aside from the LRU end until
    /// the pins are lifted.
    pub(crate) aside: bool,
}

/// Max-heap of `(next_access, slot, stamp)` with lazy deletion: a 4-ary heap (half the
/// levels of a binary one) of entries packed into one `u128` each, so a comparison is
/// one wide compare instead of a branch per field. Every eviction pops it, so its depth
/// and compares are the cost of a miss. Valid entries have distinct next accesses, so
/// which one is the maximum never depends on how ties among stale entries fall.
#[derive(Debug, Default)]
pub(crate) struct StampedHeap {
    heap: Vec<u128>,
}

const ARITY: usize = 4;

#[inline(always)]
fn pack(key: u64, slot: u32, stamp: u32) -> u128 {
    (u128::from(key) << 64) | (u128::from(slot) << 32) | u128::from(stamp)
}

#[inline(always)]
fn unpack(e: u128) -> (u64, u32, u32) {
    ((e >> 64) as u64, (e >> 32) as u32, e as u32)
}

impl StampedHeap {
    #[inline]
    pub(crate) fn push(&mut self, key: u64, slot: u32, stamp: u32) {
        let entry = pack(key, slot, stamp);
        let mut i = self.heap.len();
        self.heap.push(entry);
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if self.heap[parent] >= entry {
                break;
            }
            self.heap[i] = self.heap[parent];
            i = parent;
        }
        self.heap[i] = entry;
    }

    #[inline]
    pub(crate) fn peek_key(&self) -> Option<u64> {
        self.heap.first().map(|&e| unpack(e).0)
    }

    #[inline]
    pub(crate) fn pop(&mut self) -> Option<(u64, u32, u32)> {
        let last = self.heap.pop()?;
        if self.heap.is_empty() {
            return Some(unpack(last));
        }
        let top = self.heap[0];
        self.sift_down(0, last);
        Some(unpack(top))
    }

    /// Places `entry` at hole `i` or below it.
    #[inline]
    fn sift_down(&mut self, mut i: usize, entry: u128) {
        let n = self.heap.len();
        loop {
            let first = ARITY * i + 1;
            if first >= n {
                break;
            }
            let h = &self.heap;
            let best = if first + ARITY <= n {
                // A tournament of selects, no branch on the data (children's order is
                // random, so branches would mispredict half the time).
                let larger = |a: usize, b: usize| if h[b] > h[a] { b } else { a };
                larger(larger(first, first + 1), larger(first + 2, first + 3))
            } else {
                (first + 1..n).fold(first, |best, c| if h[c] > h[best] { c } else { best })
            };
            if self.heap[best] <= entry {
                break;
            }
            self.heap[i] = self.heap[best];
            i = best;
        }
        self.heap[i] = entry;
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Rebuilds the heap from `live` entries (drops stale ones) in place.
    pub(crate) fn rebuild(&mut self, live: impl Iterator<Item = (u64, u32, u32)>) {
        self.heap.clear();
        self.heap.extend(live.map(|(key, slot, stamp)| pack(key, slot, stamp)));
        for i in (0..self.heap.len() / ARITY + 1).rev() {
            if i < self.heap.len() {
                let entry = self.heap[i];
                self.sift_down(i, entry);
            }
        }
    }
}

/// Belady's optimal offline algorithm MIN (Belady, "A study of replacement algorithms for
/// a virtual-storage computer", IBM Systems Journal, 1966): on a miss with a full cache,
/// evict the resident row whose next access ([`Request::next_access`]) is farthest away.
/// Like libCacheSim's `Belady` (`cache/eviction/Belady.c`), every missed row is inserted,
/// even one that is never requested again (no bypass); miss counts agree exactly. A
/// max-heap keyed by next access with lazy deletion (and periodic compaction) gives
/// O(log n) per request; rows never requested again skip the heap for a stack, since
/// any of them is an equally good victim and they are the first to go. Pinned rows are
/// passed over: the victim is the unpinned row used farthest in the future; none, and
/// the miss is not admitted. A pinned row's entry met on the way is set aside until the
/// pins are lifted, then filed again, so each is passed over once, not at every
/// eviction (the rows a batch has just looked up are on top when never used again).
#[derive(Debug)]
pub struct Belady {
    capacity: usize,
    len: usize,
    map: IdMap,
    arena: Arena<FutureMeta>,
    heap: StampedHeap,
    /// `(slot, stamp)` of resident rows whose next access is `NEVER`.
    never: Vec<(u32, u32)>,
    stamp: u32,
    pins: Pins,
    /// Entries of pinned rows set aside by [`Belady::pop_farthest`] until `unpin_all`.
    pinned_never: Vec<(u32, u32)>,
    pinned_heap: Vec<(u64, u32, u32)>,
}

impl Belady {
    /// An empty Belady cache of `capacity` rows. Panics if `capacity` is 0.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        Belady {
            capacity,
            len: 0,
            map: IdMap::new(),
            arena: Arena::with_capacity(capacity),
            heap: StampedHeap::default(),
            never: Vec::new(),
            stamp: 0,
            pins: Pins::default(),
            pinned_never: Vec::new(),
            pinned_heap: Vec::new(),
        }
    }

    #[inline]
    fn next_stamp(&mut self) -> u32 {
        self.stamp = self.stamp.wrapping_add(1);
        self.stamp
    }

    fn compact_if_needed(&mut self) {
        if self.heap.len() > 2 * self.len + 64 {
            let arena = &self.arena;
            let live = (0..arena.slots() as u32).filter_map(|s| {
                let m = arena.data(s);
                (m.live && m.next != NEVER).then_some((m.next, s, m.stamp))
            });
            self.heap.rebuild(live);
        }
    }

    /// Files `slot` under its next access: the never-again stack or the heap.
    #[inline]
    fn file(&mut self, next: u64, slot: u32, stamp: u32) {
        if next == NEVER {
            self.never.push((slot, stamp));
        } else {
            self.heap.push(next, slot, stamp);
        }
    }

    /// The resident unpinned row used farthest in the future, taken off the stack or
    /// heap ([`NIL`] if every resident row is pinned). Pinned rows' entries found on the
    /// way are set aside until `unpin_all`.
    fn pop_farthest(&mut self) -> u32 {
        while let Some((s, stamp)) = self.never.pop() {
            let m = self.arena.data(s);
            if m.live && m.stamp == stamp {
                if self.pins.contains(self.arena.id(s)) {
                    self.pinned_never.push((s, stamp));
                    continue;
                }
                return s;
            }
        }
        while let Some((next, s, stamp)) = self.heap.pop() {
            let m = self.arena.data(s);
            if m.live && m.stamp == stamp && m.next == next {
                if self.pins.contains(self.arena.id(s)) {
                    self.pinned_heap.push((next, s, stamp));
                    continue;
                }
                return s;
            }
        }
        assert!(!self.pins.is_empty(), "a full Belady cache has a live heap entry");
        NIL
    }
}

impl EvictionPolicy for Belady {
    fn name(&self) -> &'static str {
        "belady"
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
        let id = req.id;
        let s = self.map.get(id);
        if s != NIL {
            let stamp = self.next_stamp();
            let m = self.arena.data_mut(s);
            m.next = req.next_access;
            m.stamp = stamp;
            self.file(req.next_access, s, stamp);
            self.compact_if_needed();
            return Access { hit: true, inserted: false, evicted: None };
        }
        let mut evicted = None;
        let stamp = self.next_stamp();
        let meta = FutureMeta { next: req.next_access, stamp, live: true, known: false, aside: false };
        let slot = if self.len >= self.capacity {
            let v = self.pop_farthest();
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
        self.file(req.next_access, slot, stamp);
        self.map.set(id, slot);
        self.compact_if_needed();
        Access { hit: false, inserted: true, evicted }
    }

    fn pin(&mut self, id: u64) {
        self.pins.insert(id);
    }
    fn unpin_all(&mut self) {
        self.pins.clear();
        // In the order they were taken off, so the stack's order is as it was.
        while let Some(entry) = self.pinned_never.pop() {
            self.never.push(entry);
        }
        for (next, s, stamp) in self.pinned_heap.drain(..) {
            self.heap.push(next, s, stamp);
        }
    }

    fn remove(&mut self, id: u64) -> bool {
        let s = self.map.get(id);
        if s == NIL {
            return false;
        }
        self.arena.data_mut(s).live = false;
        self.arena.release(s);
        self.map.clear(id);
        self.len -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::StampedHeap;
    use std::collections::BinaryHeap;

    #[test]
    fn stamped_heap_pops_what_a_binary_heap_pops() {
        let mut ours = StampedHeap::default();
        let mut reference = BinaryHeap::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for round in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) {
                assert_eq!(ours.pop(), reference.pop(), "round {round}");
            } else {
                let entry = (x % 500, (x >> 20) as u32 % 7, round);
                ours.push(entry.0, entry.1, entry.2);
                reference.push(entry);
            }
            assert_eq!(ours.peek_key(), reference.peek().map(|e| e.0));
            if round.is_multiple_of(4999) {
                let kept: Vec<_> = reference.iter().copied().filter(|e| e.2 % 2 == 0).collect();
                ours.rebuild(kept.iter().copied());
                reference = kept.into_iter().collect();
            }
            assert_eq!(ours.len(), reference.len());
        }
        while let Some(e) = reference.pop() {
            assert_eq!(ours.pop(), Some(e));
        }
        assert_eq!(ours.pop(), None);
    }
}
