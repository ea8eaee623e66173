//! The key -> last offset map a cleaning pass builds over the dirty part of a log.
//!
//! Kafka's cleaner keeps a 16-byte hash of each key, accepting that two keys colliding lose
//! one of them. This map keeps the keys themselves (exact: no record is ever dropped for
//! another key's sake), and counts what each entry costs against a fixed budget; a pass
//! covers the dirty records whose keys fit, the next pass goes on from there.
//!
//! It is the cleaner's hot loop (every dirty record is put once and looked up once), and it
//! runs on a shard beside produce, so nothing in it may take long in one go: the keys live in
//! an arena of fixed-size chunks (no allocation per key, none freed one by one when the pass
//! drops the map, no arena growth that copies every key), and the table is sized once for
//! the keys the pass expects (`clean.rs`: no rehash of every key half-way through a pass; a
//! rehash of 100,000 keys took milliseconds of the shard's core). Hashing is foldhash, seeded
//! afresh for each map (hashbrown's default): a fraction of std's SipHash on short keys, and
//! still no way for a producer to choose keys that collide (docs/BENCHMARKS.md, seventeenth
//! session).

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

/// What one entry is counted as beyond its key's bytes: its slot and the table's slack.
pub const ENTRY_OVERHEAD: usize = 64;

/// Bytes of one arena chunk (a longer key has a chunk of its own).
const CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy)]
struct Slot {
    chunk: u32,
    at: u32,
    len: u32,
    offset: u64,
}

/// Keys and the offset of their last record, within a memory budget.
pub struct OffsetMap {
    table: HashTable<Slot>,
    chunks: Vec<Vec<u8>>,
    hasher: DefaultHashBuilder,
    used: usize,
    budget: usize,
}

fn key_of<'a>(chunks: &'a [Vec<u8>], s: &Slot) -> &'a [u8] {
    &chunks[s.chunk as usize][s.at as usize..s.at as usize + s.len as usize]
}

impl OffsetMap {
    /// A map of at most `budget_bytes`, its table sized for `expected_keys` (it grows past
    /// them if it must: a rehash of every key in one go).
    pub fn new(budget_bytes: usize, expected_keys: u64) -> Self {
        let entries = (budget_bytes / ENTRY_OVERHEAD)
            .min(usize::try_from(expected_keys).unwrap_or(usize::MAX));
        Self {
            table: HashTable::with_capacity(entries),
            chunks: Vec::new(),
            hasher: DefaultHashBuilder::default(),
            used: 0,
            budget: budget_bytes,
        }
    }

    /// Records `offset` as the last one of `key` (offsets come in increasing order). False,
    /// and the map unchanged, if `key` is new and its entry does not fit in the budget.
    pub fn put(&mut self, key: &[u8], offset: u64) -> bool {
        let hash = self.hasher.hash_one(key);
        let chunks = &self.chunks;
        if let Some(s) = self.table.find_mut(hash, |s| key_of(chunks, s) == key) {
            s.offset = offset;
            return true;
        }
        let cost = key.len() + ENTRY_OVERHEAD;
        let Ok(len) = u32::try_from(key.len()) else {
            return false;
        };
        if self.used + cost > self.budget {
            return false;
        }
        self.used += cost;
        let room = self
            .chunks
            .last()
            .is_some_and(|c| c.capacity() - c.len() >= key.len());
        if !room {
            self.chunks
                .push(Vec::with_capacity(CHUNK_BYTES.max(key.len())));
        }
        let chunk = self.chunks.len() - 1;
        let bytes = &mut self.chunks[chunk];
        let at = bytes.len();
        bytes.extend_from_slice(key);
        let slot = Slot {
            chunk: chunk as u32,
            at: at as u32,
            len,
            offset,
        };
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        self.table
            .insert_unique(hash, slot, |s| hasher.hash_one(key_of(chunks, s)));
        true
    }

    /// The last offset of `key` in the mapped range.
    pub fn get(&self, key: &[u8]) -> Option<u64> {
        let hash = self.hasher.hash_one(key);
        self.table
            .find(hash, |s| key_of(&self.chunks, s) == key)
            .map(|s| s.offset)
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
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
        let mut m = OffsetMap::new(2 * (3 + ENTRY_OVERHEAD), 100);
        assert!(m.put(b"abc", 1));
        assert!(m.put(b"abc", 7), "a key already in costs nothing more");
        assert_eq!(m.get(b"abc"), Some(7));
        assert!(m.put(b"xyz", 8));
        assert_eq!(m.used(), 2 * (3 + ENTRY_OVERHEAD));
        assert!(!m.put(b"new", 9), "the budget holds two keys");
        assert_eq!(m.get(b"new"), None, "a refused key is not in the map");
        assert!(
            m.put(b"xyz", 10),
            "a key already in still takes updates when full"
        );
        assert_eq!(m.get(b"xyz"), Some(10));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn many_keys_across_chunks_and_past_the_sized_table_are_all_found() {
        // Sized for 10 keys, given 50,000 of up to 100 bytes (several arena chunks, a table
        // that must grow), and one key longer than a chunk.
        let mut m = OffsetMap::new(1 << 30, 10);
        let key = |i: u64| format!("{i:0width$}", width = 1 + (i % 100) as usize).into_bytes();
        for i in 0..50_000u64 {
            assert!(m.put(&key(i), i));
        }
        let long = vec![7u8; CHUNK_BYTES + 5];
        assert!(m.put(&long, 99));
        for i in (0..50_000u64).step_by(7) {
            assert!(m.put(&key(i), i + 1_000_000));
        }
        assert_eq!(m.len(), 50_001);
        for i in 0..50_000u64 {
            let want = if i % 7 == 0 { i + 1_000_000 } else { i };
            assert_eq!(m.get(&key(i)), Some(want), "key {i}");
        }
        assert_eq!(m.get(&long), Some(99));
        assert_eq!(m.get(b"absent"), None);
    }
}
