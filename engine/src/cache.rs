//! The batch cache: recent batches of every partition of a shard, bounded in bytes.
//!
//! Tail reads (consumers keeping up with producers) are served from here without touching
//! the disk. Entries hold the very `Bytes` the producer's payload arrived in, so a hit copies
//! no payload byte: it clones reference-counted handles. One cache per shard, used from that
//! shard only; eviction is oldest-first across all its partitions.

use std::collections::{HashMap, VecDeque};

use std::rc::Rc;

use crate::readahead_budget::ReadAheadBudget;
use crate::ReadBatch;

/// Share of the cache's capacity that the shard's read-ahead chunks may hold besides it.
const READ_AHEAD_SHARE: usize = 4;

pub struct BatchCache {
    capacity_bytes: usize,
    readahead: Rc<ReadAheadBudget>,
    used_bytes: usize,
    partitions: HashMap<u64, VecDeque<ReadBatch>>,
    /// Batches held, across partitions.
    held: usize,
    /// Insertion order across partitions: (partition key, base offset). Batches removed other
    /// than by eviction (retention, a gap, invalidation) leave their entry here; once stale
    /// entries outnumber the held batches (plus [`ORDER_SLACK`]) they are swept, so the order
    /// holds at most about twice as many entries as there are batches.
    order: VecDeque<(u64, u64)>,
}

/// Stale entries of the insertion order tolerated besides twice the held batches.
const ORDER_SLACK: usize = 1024;

impl BatchCache {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            readahead: ReadAheadBudget::new(capacity_bytes / READ_AHEAD_SHARE),
            used_bytes: 0,
            partitions: HashMap::new(),
            held: 0,
            order: VecDeque::new(),
        }
    }

    pub fn used_bytes(&self) -> usize {
        self.used_bytes
    }

    /// The shard's read-ahead budget: a quarter of the cache's capacity, on top of it.
    pub fn readahead_budget(&self) -> Rc<ReadAheadBudget> {
        self.readahead.clone()
    }

    /// Adds the newest batch of a partition. Batches of a partition come in offset order; a
    /// batch that does not follow the cached ones replaces them.
    pub fn insert(&mut self, key: u64, batch: ReadBatch) {
        let size = batch.payload.len();
        if size > self.capacity_bytes {
            self.invalidate(key);
            return;
        }
        let entries = self.partitions.entry(key).or_default();
        if let Some(last) = entries.back() {
            // The log inserts its batches in order (with the gaps its frames have: a
            // follower's copy of a compacted range): a truncation or a removal tells the
            // cache first. In a release build an overlap costs the cached batches only.
            debug_assert!(
                last.next_offset() <= batch.base_offset,
                "a batch inserted into the cache does not follow the cached ones"
            );
            if last.next_offset() > batch.base_offset {
                let dropped: usize = entries.iter().map(|b| b.payload.len()).sum();
                self.held -= entries.len();
                entries.clear();
                self.used_bytes -= dropped;
            }
        }
        self.order.push_back((key, batch.base_offset));
        entries.push_back(batch);
        self.held += 1;
        self.used_bytes += size;
        while self.used_bytes > self.capacity_bytes {
            let Some((k, base)) = self.order.pop_front() else {
                break;
            };
            if let Some(entries) = self.partitions.get_mut(&k) {
                if entries.front().map(|b| b.base_offset) == Some(base) {
                    if let Some(b) = entries.pop_front() {
                        self.held -= 1;
                        self.used_bytes -= b.payload.len();
                    }
                }
            }
        }
        self.sweep_order();
    }

    /// Drops the entries of the insertion order whose batch is no longer held, once they
    /// outnumber the held batches (amortised: each sweep removes at least `ORDER_SLACK`).
    fn sweep_order(&mut self) {
        if self.order.len() <= 2 * self.held + ORDER_SLACK {
            return;
        }
        let partitions = &self.partitions;
        self.order.retain(|(k, base)| {
            partitions.get(k).is_some_and(|entries| {
                entries
                    .binary_search_by_key(base, |b| b.base_offset)
                    .is_ok()
            })
        });
    }

    /// Entries of the insertion order (held batches and stale ones not yet swept).
    pub fn order_len(&self) -> usize {
        self.order.len()
    }

    /// Batches from the one containing `offset`, up to `max_bytes` (at least one batch), if
    /// that batch is cached.
    pub fn read(&self, key: u64, offset: u64, max_bytes: usize) -> Option<Vec<ReadBatch>> {
        let entries = self.partitions.get(&key)?;
        let front = entries.front()?;
        if offset < front.base_offset {
            return None;
        }
        let idx = entries.partition_point(|b| b.next_offset() <= offset);
        if idx >= entries.len() {
            return None;
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for b in entries.range(idx..) {
            if !out.is_empty() && bytes + b.payload.len() > max_bytes {
                break;
            }
            bytes += b.payload.len();
            out.push(b.clone());
        }
        Some(out)
    }

    /// Forgets a partition's batches (truncation, deletion).
    pub fn invalidate(&mut self, key: u64) {
        if let Some(entries) = self.partitions.remove(&key) {
            self.held -= entries.len();
            self.used_bytes -= entries.iter().map(|b| b.payload.len()).sum::<usize>();
        }
        self.sweep_order();
    }

    /// Forgets batches that hold `offset` or later ones (the log's tail was cut there).
    pub fn truncate_from(&mut self, key: u64, offset: u64) {
        if let Some(entries) = self.partitions.get_mut(&key) {
            while entries.back().is_some_and(|b| b.next_offset() > offset) {
                if let Some(b) = entries.pop_back() {
                    self.held -= 1;
                    self.used_bytes -= b.payload.len();
                }
            }
        }
        self.sweep_order();
    }

    /// Forgets batches that end at or below `offset` (retention moved the log start).
    pub fn evict_below(&mut self, key: u64, offset: u64) {
        if let Some(entries) = self.partitions.get_mut(&key) {
            while entries.front().is_some_and(|b| b.next_offset() <= offset) {
                if let Some(b) = entries.pop_front() {
                    self.held -= 1;
                    self.used_bytes -= b.payload.len();
                }
            }
        }
        self.sweep_order();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn batch(base: u64, count: u32, len: usize) -> ReadBatch {
        ReadBatch {
            base_offset: base,
            record_count: count,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
            leader_epoch: 0,
            payload: Bytes::from(vec![7u8; len]),
        }
    }

    #[test]
    fn hit_shares_the_payload_and_eviction_bounds_memory() {
        let mut cache = BatchCache::new(300);
        let b0 = batch(0, 2, 100);
        let ptr = b0.payload.as_ptr();
        cache.insert(1, b0);
        cache.insert(1, batch(2, 2, 100));
        cache.insert(2, batch(0, 1, 100));
        let hit = cache.read(1, 1, 1000).unwrap();
        assert_eq!(hit.len(), 2);
        assert_eq!(
            hit[0].payload.as_ptr(),
            ptr,
            "a hit must not copy the payload"
        );
        cache.insert(2, batch(1, 1, 100));
        assert_eq!(cache.used_bytes(), 300);
        assert!(
            cache.read(1, 0, 1000).is_none(),
            "oldest batch evicted first"
        );
        assert_eq!(cache.read(1, 2, 1000).unwrap().len(), 1);
        assert!(cache.read(1, 4, 1000).is_none());
    }

    #[test]
    fn the_insertion_order_stays_bounded_when_retention_keeps_the_cache_under_capacity() {
        // Retention drops each batch soon after it is cached: the cache never fills, so
        // eviction never pops the order. Truncations and invalidations leave stale entries
        // too.
        let mut cache = BatchCache::new(1 << 30);
        for i in 0..200_000u64 {
            cache.insert(1, batch(i, 1, 10));
            // A tail cut before each insert: the one batch held is replaced each time.
            cache.truncate_from(2, i);
            cache.insert(2, batch(i, 1, 10));
            if i % 10 == 9 {
                cache.evict_below(1, i - 2);
            }
            if i % 1000 == 999 {
                cache.invalidate(3);
                cache.insert(3, batch(i, 1, 10));
            }
        }
        let held: usize = cache.partitions.values().map(VecDeque::len).sum();
        assert_eq!(held, cache.held);
        assert!(
            cache.order_len() <= 2 * held + ORDER_SLACK,
            "{} order entries for {held} batches",
            cache.order_len()
        );
        // What is held is still evicted oldest first once the cache fills.
        assert_eq!(cache.read(1, 199_998, 100).unwrap().len(), 2);
    }

    #[test]
    fn truncation_drops_the_tail_and_max_bytes_limits() {
        let mut cache = BatchCache::new(10_000);
        cache.insert(1, batch(0, 1, 10));
        cache.insert(1, batch(1, 2, 10));
        cache.insert(1, batch(3, 1, 10));
        // A cut inside the batch at 1..3 drops it and everything after.
        cache.truncate_from(1, 2);
        assert_eq!(cache.used_bytes(), 10);
        assert!(cache.read(1, 1, 100).is_none());
        cache.insert(1, batch(1, 1, 10));
        cache.insert(1, batch(2, 1, 10));
        assert_eq!(
            cache.read(1, 1, 5).unwrap().len(),
            1,
            "at least one batch, then the limit"
        );
        cache.evict_below(1, 2);
        assert_eq!(cache.used_bytes(), 10);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "does not follow the cached ones")]
    fn an_overlap_in_the_inserts_is_a_bug() {
        let mut cache = BatchCache::new(10_000);
        cache.insert(1, batch(0, 3, 10));
        cache.insert(1, batch(2, 1, 10));
    }

    #[test]
    fn a_gap_a_compacted_log_has_is_cached_and_read_across() {
        let mut cache = BatchCache::new(10_000);
        cache.insert(1, batch(0, 1, 10));
        cache.insert(1, batch(5, 2, 10));
        let got = cache
            .read(1, 2, 1_000)
            .expect("an offset in the gap is cached");
        assert_eq!(got.first().map(|b| b.base_offset), Some(5));
        assert_eq!(cache.read(1, 0, 1_000).map(|v| v.len()), Some(2));
    }
}
