//! Pins: the rows a policy must not choose as a victim (the engine pins the rows of the
//! batch being placed). One bit per id, plus the list of pinned ids so that unpinning
//! costs O(pinned), not O(ids).

/// A set of pinned row ids: O(1) to pin and to test, O(pinned) to clear.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pins {
    /// Bit `id` set: `id` is pinned.
    bits: Vec<u64>,
    /// Every pinned id, once each.
    ids: Vec<u64>,
}

impl Pins {
    /// Whether no row is pinned (the fast path of every policy).
    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether `id` is pinned.
    #[inline(always)]
    pub(crate) fn contains(&self, id: u64) -> bool {
        !self.ids.is_empty() && self.bits.get((id / 64) as usize).is_some_and(|w| w >> (id % 64) & 1 == 1)
    }

    /// Pins `id` (again: no effect).
    #[inline]
    pub(crate) fn insert(&mut self, id: u64) {
        let word = (id / 64) as usize;
        if word >= self.bits.len() {
            self.grow(word);
        }
        let bit = 1u64 << (id % 64);
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.ids.push(id);
        }
    }

    #[cold]
    fn grow(&mut self, word: usize) {
        let len = (word + 1).max(self.bits.len() * 2).max(16);
        self.bits.resize(len, 0);
    }

    /// Unpins every row.
    pub(crate) fn clear(&mut self) {
        for id in self.ids.drain(..) {
            self.bits[(id / 64) as usize] &= !(1u64 << (id % 64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Pins;

    #[test]
    fn pins_are_set_once_and_cleared_together() {
        let mut pins = Pins::default();
        assert!(pins.is_empty() && !pins.contains(5));
        for id in [5, 5, 64, 100_000] {
            pins.insert(id);
        }
        assert!(pins.contains(5) && pins.contains(64) && pins.contains(100_000));
        assert!(!pins.contains(6) && !pins.contains(63) && !pins.contains(1 << 40));
        assert_eq!(pins.ids.len(), 3);
        pins.clear();
        assert!(pins.is_empty() && !pins.contains(5) && !pins.contains(100_000));
        assert!(pins.bits.iter().all(|&w| w == 0));
    }
}
