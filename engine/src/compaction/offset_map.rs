//! The key -> last offset map a cleaning pass builds over the dirty part of a log.
//!
//! Kafka's cleaner keeps a 16-byte hash of each key, accepting that two keys colliding lose
//! one of them. This map keeps the keys themselves (exact: no record is ever dropped for
//! another key's sake), and counts what each entry costs against a fixed budget; a pass
//! covers the dirty records whose keys fit, the next pass goes on from there.

use std::collections::HashMap;

/// What one entry is counted as beyond its key's bytes: the map's slot (key pointer and
/// length, offset, hash metadata) and the key's allocation overhead.
pub const ENTRY_OVERHEAD: usize = 64;

/// Keys and the offset of their last record, within a memory budget.
pub struct OffsetMap {
    map: HashMap<Box<[u8]>, u64>,
    used: usize,
    budget: usize,
}

impl OffsetMap {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            map: HashMap::new(),
            used: 0,
            budget: budget_bytes,
        }
    }

    /// What adding `key` would cost (nothing if it is already in).
    pub fn cost(&self, key: &[u8]) -> usize {
        if self.map.contains_key(key) {
            0
        } else {
            key.len() + ENTRY_OVERHEAD
        }
    }

    /// Whether `cost` more bytes fit in the budget.
    pub fn fits(&self, cost: usize) -> bool {
        self.used + cost <= self.budget
    }

    /// Records `offset` as the last one of `key` (offsets come in increasing order).
    pub fn put(&mut self, key: &[u8], offset: u64) {
        if let Some(o) = self.map.get_mut(key) {
            *o = offset;
            return;
        }
        self.used += key.len() + ENTRY_OVERHEAD;
        self.map.insert(key.into(), offset);
    }

    /// The last offset of `key` in the mapped range.
    pub fn get(&self, key: &[u8]) -> Option<u64> {
        self.map.get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of the budget used.
    pub fn used(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_offset_and_counts_new_keys_only() {
        let mut m = OffsetMap::new(2 * (3 + ENTRY_OVERHEAD));
        m.put(b"abc", 1);
        assert_eq!(m.cost(b"abc"), 0);
        m.put(b"abc", 7);
        assert_eq!(m.get(b"abc"), Some(7));
        assert!(m.fits(m.cost(b"xyz")));
        m.put(b"xyz", 8);
        assert!(!m.fits(m.cost(b"new")), "the budget holds two keys");
        assert_eq!(m.len(), 2);
    }
}
