//! Shared hot-path data structures: the dense id -> slot map ([`IdMap`]), the slot
//! arena ([`Arena`]) and intrusive doubly linked lists threaded through it ([`List`]).
//!
//! Every policy that keeps rows in an order (LRU, FIFO, CLOCK, SIEVE, LFU buckets, ARC,
//! S3-FIFO, W-TinyLFU, lookahead Belady) uses these, so there is one list implementation.
//! Slots are `u32` indices into a `Vec`; [`NIL`] marks "no slot".

use crate::pins::Pins;

/// "No slot": absent from the id map, or the end of a list.
pub(crate) const NIL: u32 = u32::MAX;

/// Growable map from a dense row id to a slot index ([`NIL`] when absent).
///
/// Memory is 4 bytes per id up to the largest id seen: ids must be dense (the engine and
/// the simulator map keys to `0..n`).
#[derive(Clone, Debug, Default)]
pub(crate) struct IdMap {
    slots: Vec<u32>,
}

impl IdMap {
    pub(crate) fn new() -> Self {
        IdMap { slots: Vec::new() }
    }

    /// The slot of `id`, or [`NIL`].
    #[inline(always)]
    pub(crate) fn get(&self, id: u64) -> u32 {
        match self.slots.get(id as usize) {
            Some(&s) => s,
            None => NIL,
        }
    }

    /// Starts fetching `id`'s entry into cache.
    #[inline(always)]
    pub(crate) fn prefetch(&self, id: u64) {
        crate::prefetch_element(&self.slots, id as usize);
    }

    /// Maps `id` to `slot`, growing the table (amortised doubling) when `id` is new.
    #[inline(always)]
    pub(crate) fn set(&mut self, id: u64, slot: u32) {
        let i = id as usize;
        if i >= self.slots.len() {
            self.grow(i);
        }
        self.slots[i] = slot;
    }

    #[cold]
    fn grow(&mut self, i: usize) {
        let new_len = (i + 1).max(self.slots.len() * 2).max(1024);
        self.slots.resize(new_len, NIL);
    }

    /// Forgets `id`.
    #[inline(always)]
    pub(crate) fn clear(&mut self, id: u64) {
        if let Some(s) = self.slots.get_mut(id as usize) {
            *s = NIL;
        }
    }
}

/// One slot: list links, the row id it holds and policy-specific metadata.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node<T> {
    prev: u32,
    next: u32,
    id: u64,
    pub(crate) data: T,
}

/// A `Vec` of slots with a free list. Lists ([`List`]) thread through it; several lists
/// may share one arena (ARC's four lists, S3-FIFO's three queues, ...).
#[derive(Clone, Debug)]
pub(crate) struct Arena<T> {
    nodes: Vec<Node<T>>,
    free: Vec<u32>,
}

impl<T: Copy> Arena<T> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Arena { nodes: Vec::with_capacity(n), free: Vec::new() }
    }

    /// A fresh unlinked slot holding `id` and `data` (reuses a released slot if any).
    #[inline]
    pub(crate) fn alloc(&mut self, id: u64, data: T) -> u32 {
        let node = Node { prev: NIL, next: NIL, id, data };
        if let Some(i) = self.free.pop() {
            self.nodes[i as usize] = node;
            i
        } else {
            let i = self.nodes.len();
            assert!(i < NIL as usize, "more than u32::MAX - 1 slots");
            self.nodes.push(node);
            i as u32
        }
    }

    /// Number of slots ever allocated (live or released): valid slots are `0..slots()`.
    #[inline]
    pub(crate) fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// Reuses an unlinked slot in place for a new row (cheaper than release + alloc).
    #[inline(always)]
    pub(crate) fn reuse(&mut self, n: u32, id: u64, data: T) {
        self.nodes[n as usize] = Node { prev: NIL, next: NIL, id, data };
    }

    /// Returns an unlinked slot to the free list.
    #[inline]
    pub(crate) fn release(&mut self, n: u32) {
        self.free.push(n);
    }

    #[inline(always)]
    pub(crate) fn id(&self, n: u32) -> u64 {
        self.nodes[n as usize].id
    }

    #[inline(always)]
    pub(crate) fn data(&self, n: u32) -> &T {
        &self.nodes[n as usize].data
    }

    #[inline(always)]
    pub(crate) fn data_mut(&mut self, n: u32) -> &mut T {
        &mut self.nodes[n as usize].data
    }

    /// Starts fetching slot `n`'s node into cache (nothing for [`NIL`]).
    #[inline(always)]
    pub(crate) fn prefetch(&self, n: u32) {
        crate::prefetch_element(&self.nodes, n as usize);
    }

    /// The neighbour towards the head (newer end), or [`NIL`].
    #[inline(always)]
    pub(crate) fn prev(&self, n: u32) -> u32 {
        self.nodes[n as usize].prev
    }

    /// The neighbour towards the tail (older end), or [`NIL`].
    #[inline(always)]
    pub(crate) fn next(&self, n: u32) -> u32 {
        self.nodes[n as usize].next
    }
}

/// An intrusive doubly linked list of slots of an [`Arena`]. By convention the head is
/// the newest / most recently used end and the tail the oldest end.
#[derive(Clone, Copy, Debug)]
pub(crate) struct List {
    head: u32,
    tail: u32,
    len: u32,
}

impl Default for List {
    fn default() -> Self {
        Self::new()
    }
}

impl List {
    pub(crate) const fn new() -> Self {
        List { head: NIL, tail: NIL, len: 0 }
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.len as usize
    }

    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    pub(crate) fn head(&self) -> u32 {
        self.head
    }

    #[inline(always)]
    pub(crate) fn tail(&self) -> u32 {
        self.tail
    }

    /// Links the unlinked slot `n` at the head.
    #[inline(always)]
    pub(crate) fn push_front<T>(&mut self, a: &mut Arena<T>, n: u32) {
        let old = self.head;
        {
            let node = &mut a.nodes[n as usize];
            node.prev = NIL;
            node.next = old;
        }
        if old != NIL {
            a.nodes[old as usize].prev = n;
        } else {
            self.tail = n;
        }
        self.head = n;
        self.len += 1;
    }

    /// Links the unlinked slot `n` right after (towards the tail of) the linked slot `at`.
    #[inline]
    pub(crate) fn insert_after<T>(&mut self, a: &mut Arena<T>, at: u32, n: u32) {
        let nx = a.nodes[at as usize].next;
        {
            let node = &mut a.nodes[n as usize];
            node.prev = at;
            node.next = nx;
        }
        a.nodes[at as usize].next = n;
        if nx != NIL {
            a.nodes[nx as usize].prev = n;
        } else {
            self.tail = n;
        }
        self.len += 1;
    }

    /// Unlinks slot `n`, which must be in this list.
    #[inline(always)]
    pub(crate) fn unlink<T>(&mut self, a: &mut Arena<T>, n: u32) {
        let (p, nx) = {
            let node = &a.nodes[n as usize];
            (node.prev, node.next)
        };
        if p != NIL {
            a.nodes[p as usize].next = nx;
        } else {
            self.head = nx;
        }
        if nx != NIL {
            a.nodes[nx as usize].prev = p;
        } else {
            self.tail = p;
        }
        self.len -= 1;
    }

    /// Moves slot `n` (in this list) to the head.
    #[inline(always)]
    pub(crate) fn move_to_front<T>(&mut self, a: &mut Arena<T>, n: u32) {
        if self.head != n {
            self.unlink(a, n);
            self.push_front(a, n);
        }
    }

    /// Unlinks and returns the tail slot.
    #[inline(always)]
    pub(crate) fn pop_back<T>(&mut self, a: &mut Arena<T>) -> Option<u32> {
        let t = self.tail;
        if t == NIL {
            None
        } else {
            self.unlink(a, t);
            // The tail end is by definition the coldest part of a list: fetch the node
            // the pop after next unlinks, so runs of evictions do not stall on each one.
            if self.tail != NIL {
                crate::prefetch_element(&a.nodes, a.nodes[self.tail as usize].prev as usize);
            }
            Some(t)
        }
    }

    /// The slot nearest the tail whose row is not pinned ([`NIL`] if every row is):
    /// the tail itself when nothing is pinned.
    #[inline]
    pub(crate) fn last_unpinned<T: Copy>(&self, a: &Arena<T>, pins: &Pins) -> u32 {
        let mut n = self.tail;
        if pins.is_empty() {
            return n;
        }
        while n != NIL && pins.contains(a.id(n)) {
            n = a.prev(n);
        }
        n
    }

    /// Unlinks and returns the slot nearest the tail whose row is not pinned (the tail
    /// when nothing is pinned: [`List::pop_back`]); `None` if every row is pinned. The
    /// order of the other slots does not change.
    #[inline]
    pub(crate) fn pop_back_unpinned<T: Copy>(&mut self, a: &mut Arena<T>, pins: &Pins) -> Option<u32> {
        if pins.is_empty() {
            return self.pop_back(a);
        }
        let n = self.last_unpinned(a, pins);
        if n == NIL {
            return None;
        }
        self.unlink(a, n);
        Some(n)
    }

    /// Appends all of `other` after this list's tail, leaving `other` empty. O(1).
    pub(crate) fn append<T>(&mut self, a: &mut Arena<T>, other: &mut List) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            *self = *other;
        } else {
            a.nodes[self.tail as usize].next = other.head;
            a.nodes[other.head as usize].prev = self.tail;
            self.tail = other.tail;
            self.len += other.len;
        }
        *other = List::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(l: &List, a: &Arena<()>) -> Vec<u64> {
        let mut out = Vec::new();
        let mut n = l.head();
        while n != NIL {
            out.push(a.id(n));
            n = a.next(n);
        }
        out
    }

    #[test]
    fn list_ops() {
        let mut a = Arena::with_capacity(4);
        let mut l = List::new();
        let n: Vec<u32> = (0..4).map(|i| a.alloc(i, ())).collect();
        for &x in &n {
            l.push_front(&mut a, x);
        }
        assert_eq!(collect(&l, &a), vec![3, 2, 1, 0]);
        l.move_to_front(&mut a, n[0]);
        assert_eq!(collect(&l, &a), vec![0, 3, 2, 1]);
        assert_eq!(l.pop_back(&mut a), Some(n[1]));
        l.unlink(&mut a, n[3]);
        assert_eq!(collect(&l, &a), vec![0, 2]);
        l.insert_after(&mut a, n[0], n[3]);
        assert_eq!(collect(&l, &a), vec![0, 3, 2]);
        let mut m = List::new();
        m.push_front(&mut a, n[1]);
        l.append(&mut a, &mut m);
        assert_eq!(collect(&l, &a), vec![0, 3, 2, 1]);
        assert!(m.is_empty());
        assert_eq!(l.len(), 4);
        assert_eq!(a.prev(n[1]), n[2]);
    }

    #[test]
    fn unpinned_pops_skip_pinned_rows_and_keep_the_order() {
        let mut a = Arena::with_capacity(4);
        let mut l = List::new();
        for i in 0..4 {
            let n = a.alloc(i, ());
            l.push_front(&mut a, n);
        }
        let mut pins = Pins::default();
        pins.insert(0);
        pins.insert(2);
        assert_eq!(l.pop_back_unpinned(&mut a, &pins).map(|n| a.id(n)), Some(1));
        assert_eq!(collect(&l, &a), vec![3, 2, 0]);
        pins.insert(3);
        assert_eq!(l.last_unpinned(&a, &pins), NIL);
        assert_eq!(l.pop_back_unpinned(&mut a, &pins), None);
        assert_eq!(collect(&l, &a), vec![3, 2, 0]);
        pins.clear();
        assert_eq!(l.pop_back_unpinned(&mut a, &pins).map(|n| a.id(n)), Some(0));
    }

    #[test]
    fn id_map() {
        let mut m = IdMap::new();
        assert_eq!(m.get(5), NIL);
        m.set(5000, 7);
        assert_eq!(m.get(5000), 7);
        m.clear(5000);
        assert_eq!(m.get(5000), NIL);
        m.clear(1 << 40);
    }
}
