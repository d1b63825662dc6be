//! LFU with optional aging: evict the least frequently used row, O(1) via frequency
//! buckets; aging periodically halves every resident row's count.

use crate::list::{Arena, IdMap, List, NIL};
use crate::pins::Pins;
use crate::{Access, EvictionPolicy, Request};

#[derive(Clone, Copy, Debug)]
struct Bucket {
    freq: u64,
    items: List,
}

/// Least-frequently-used eviction with the O(1) frequency-bucket structure of Shah,
/// Mitra and Matani ("An O(1) algorithm for implementing the LFU cache eviction scheme",
/// 2010), plus optional aging in the style of TinyLFU's reset (Einziger, Friedman and
/// Manes, "TinyLFU: A Highly Efficient Cache Admission Policy", ACM ToS 2017). A row
/// enters with count 1, each hit adds 1, and a miss evicts a row of the lowest count;
/// among equal counts the row that reached that count first goes first (FIFO within a
/// bucket), which is libCacheSim's `LFU` tie-break (`cache/eviction/LFU.c`). Counts are
/// forgotten on eviction. Aging: every `aging_period` requests every resident count `c`
/// becomes `ceil(c / 2)`, so rows that were hot long ago stop pinning the cache
/// (buckets merge pairwise, rows of the lower count are evicted first; O(capacity) per
/// halving, amortised O(1) for periods of at least the capacity). With aging disabled the
/// policy has libCacheSim `LFU`'s miss counts exactly. Pinned rows are passed over: the
/// victim is the first unpinned row in that order (lowest count, then first to reach
/// it); none: the miss is not admitted.
#[derive(Debug)]
pub struct Lfu {
    capacity: usize,
    /// Requests between halvings; 0 disables aging.
    aging_period: u64,
    until_aging: u64,
    map: IdMap,
    /// Row slots; data = the bucket the row is in.
    items: Arena<u32>,
    /// Bucket slots, threaded through `order` by increasing frequency.
    buckets: Arena<Bucket>,
    order: List,
    len: usize,
    pins: Pins,
}

impl Lfu {
    /// An empty LFU cache of `capacity` rows halving counts every `aging_period` requests
    /// (0: never). Panics if `capacity` is 0.
    pub fn new(capacity: usize, aging_period: u64) -> Self {
        assert!(capacity > 0, "capacity must be positive");
        Lfu {
            capacity,
            aging_period,
            until_aging: aging_period,
            map: IdMap::new(),
            items: Arena::with_capacity(capacity),
            buckets: Arena::with_capacity(64),
            order: List::new(),
            len: 0,
            pins: Pins::default(),
        }
    }

    /// The bucket of frequency `freq` right after bucket `at` (or at the head when `at`
    /// is [`NIL`]), creating it if needed.
    #[inline]
    fn bucket_after(&mut self, at: u32, freq: u64) -> u32 {
        let next = if at == NIL { self.order.head() } else { self.buckets.next(at) };
        if next != NIL && self.buckets.data(next).freq == freq {
            return next;
        }
        let b = self.buckets.alloc(0, Bucket { freq, items: List::new() });
        if at == NIL {
            self.order.push_front(&mut self.buckets, b);
        } else {
            self.order.insert_after(&mut self.buckets, at, b);
        }
        b
    }

    #[inline]
    fn drop_if_empty(&mut self, b: u32) {
        if self.buckets.data(b).items.is_empty() {
            self.order.unlink(&mut self.buckets, b);
            self.buckets.release(b);
        }
    }

    #[inline]
    fn unlink_item(&mut self, s: u32) -> u32 {
        let b = *self.items.data(s);
        let mut l = self.buckets.data(b).items;
        l.unlink(&mut self.items, s);
        self.buckets.data_mut(b).items = l;
        b
    }

    #[inline]
    fn link_item(&mut self, s: u32, b: u32) {
        let mut l = self.buckets.data(b).items;
        l.push_front(&mut self.items, s);
        self.buckets.data_mut(b).items = l;
        *self.items.data_mut(s) = b;
    }

    /// The least frequently used unpinned row ([`NIL`] if every row is pinned).
    fn unpinned_victim(&self) -> u32 {
        let mut b = self.order.head();
        while b != NIL {
            let s = self.buckets.data(b).items.last_unpinned(&self.items, &self.pins);
            if s != NIL {
                return s;
            }
            b = self.buckets.next(b);
        }
        NIL
    }

    /// Halves every count (rounding up), merging buckets that end up equal.
    fn age(&mut self) {
        let mut b = self.order.head();
        let mut prev = NIL;
        while b != NIL {
            let next = self.buckets.next(b);
            let freq = self.buckets.data(b).freq.div_ceil(2);
            if prev != NIL && self.buckets.data(prev).freq == freq {
                // Merge `prev` (lower count, evicted first) behind `b`'s rows into `b`.
                let mut upper = self.buckets.data(b).items;
                let mut lower = self.buckets.data(prev).items;
                let mut n = lower.head();
                while n != NIL {
                    *self.items.data_mut(n) = b;
                    n = self.items.next(n);
                }
                upper.append(&mut self.items, &mut lower);
                self.buckets.data_mut(b).items = upper;
                self.buckets.data_mut(b).freq = freq;
                self.order.unlink(&mut self.buckets, prev);
                self.buckets.release(prev);
            } else {
                self.buckets.data_mut(b).freq = freq;
            }
            prev = b;
            b = next;
        }
    }
}

impl EvictionPolicy for Lfu {
    fn name(&self) -> &'static str {
        "lfu"
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
        self.items.prefetch(self.map.get(id));
    }

    fn access(&mut self, req: &Request) -> Access {
        if self.aging_period != 0 {
            self.until_aging -= 1;
            if self.until_aging == 0 {
                self.until_aging = self.aging_period;
                self.age();
            }
        }
        let id = req.id;
        let s = self.map.get(id);
        if s != NIL {
            let b = self.unlink_item(s);
            let freq = self.buckets.data(b).freq + 1;
            let nb = self.bucket_after(b, freq);
            self.link_item(s, nb);
            self.drop_if_empty(b);
            return Access { hit: true, inserted: false, evicted: None };
        }
        let mut evicted = None;
        let slot = if self.len >= self.capacity {
            let v = if self.pins.is_empty() {
                let b = self.order.head();
                let mut l = self.buckets.data(b).items;
                let v = l.pop_back(&mut self.items).expect("non-empty bucket");
                self.buckets.data_mut(b).items = l;
                self.drop_if_empty(b);
                v
            } else {
                let v = self.unpinned_victim();
                if v == NIL {
                    return Access::default();
                }
                let b = self.unlink_item(v);
                self.drop_if_empty(b);
                v
            };
            let vid = self.items.id(v);
            self.map.clear(vid);
            evicted = Some(vid);
            self.items.reuse(v, id, NIL);
            v
        } else {
            self.len += 1;
            self.items.alloc(id, NIL)
        };
        let b = self.bucket_after(NIL, 1);
        self.link_item(slot, b);
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
        let b = self.unlink_item(s);
        self.drop_if_empty(b);
        self.items.release(s);
        self.map.clear(id);
        self.len -= 1;
        true
    }
}
