//! Idempotent producers: per partition, the last batches of each producer id (epoch and
//! sequence range, and the offsets they got), so a retried batch is answered with its first
//! offsets instead of being stored twice. Rebuilt from the tail of the log the first time a
//! partition sees an idempotent batch after a start.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use spate_engine::PartitionLog;

use crate::batch::BatchHeader;

/// Batches remembered per producer (Kafka keeps 5: a producer has at most 5 in flight).
const REMEMBERED: usize = 5;
/// How much of a log's tail is read to rebuild producer state after a start. A retry comes
/// right after the broker is back, and the batch it repeats is among the last written before
/// the stop: far less than this. Reading it takes tens of milliseconds; reading the last two
/// 1 GiB segments, as before, held the partition's first idempotent produce for over a second.
const REBUILD_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Appended {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

/// How long a producer id is remembered after its last batch (Kafka's
/// `producer.id.expiration.ms`, at its default of one day). A producer silent for longer is
/// treated as new, as Kafka does; without it, every producer id a partition ever saw stayed in
/// memory for the life of the broker.
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 60 * 60 * 1000;
/// How often (at most) a partition's producers are checked for expiry, on a store.
const EXPIRY_CHECK_MS: i64 = 60 * 1000;

#[derive(Debug, Default)]
struct Producer {
    epoch: i16,
    recent: VecDeque<Appended>,
    /// Wall-clock time of the last batch stored (or of the rebuild that found it).
    last_write_ms: i64,
    /// The last batch's max timestamp (what DescribeProducers reports, as Kafka does).
    last_timestamp: i64,
}

/// A producer as DescribeProducers shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerView {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
}

#[derive(Debug, Default)]
struct PartitionProducers {
    by_id: HashMap<i64, Producer>,
    last_expiry_check_ms: i64,
}

impl PartitionProducers {
    /// Forgets the producers whose last batch is older than `expiration_ms`, at most once per
    /// `EXPIRY_CHECK_MS`.
    fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        if now_ms - self.last_expiry_check_ms < EXPIRY_CHECK_MS {
            return;
        }
        self.last_expiry_check_ms = now_ms;
        self.by_id
            .retain(|_, p| now_ms - p.last_write_ms <= expiration_ms);
    }
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Already stored: answer with these offsets and store nothing.
    Duplicate {
        base_offset: i64,
    },
    /// The producer's epoch is older than one already seen (INVALID_PRODUCER_EPOCH).
    StaleEpoch,
    /// A gap or reordering in the sequence (OUT_OF_ORDER_SEQUENCE_NUMBER).
    OutOfOrder {
        expected: i32,
    },
}

pub struct ProducerStates {
    partitions: RefCell<HashMap<(String, u32), PartitionProducers>>,
    expiration_ms: i64,
}

impl Default for ProducerStates {
    fn default() -> Self {
        Self::new(PRODUCER_ID_EXPIRATION_MS)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn next_seq(s: i32) -> i32 {
    if s == i32::MAX {
        0
    } else {
        s + 1
    }
}

impl ProducerStates {
    /// Producer ids are forgotten `expiration_ms` after their last batch.
    pub fn new(expiration_ms: i64) -> Self {
        Self {
            partitions: RefCell::new(HashMap::new()),
            expiration_ms,
        }
    }

    /// Loads the partition's producer state from its log the first time it is needed.
    pub async fn ensure_loaded(&self, topic: &str, partition: u32, log: &PartitionLog) {
        let key = (topic.to_string(), partition);
        if self.partitions.borrow().contains_key(&key) {
            return;
        }
        let mut state = PartitionProducers::default();
        let now = now_ms();
        let start = log.offset_before_end(REBUILD_BYTES);
        let end = log.stats().log_end_offset;
        let mut offset = start;
        let mut batches = 0u64;
        while offset < end {
            // Up to the log end, not the high watermark: a new leader's high watermark
            // starts low, and a retried batch below its end is still a duplicate.
            let read = match log
                .read_to(offset, 4 << 20, spate_engine::ReadBound::LogEnd)
                .await
            {
                Ok(r) if !r.is_empty() => r,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(
                        partition = log.name(),
                        "producer state rebuild stopped at offset {offset}: {e}"
                    );
                    break;
                }
            };
            for b in &read {
                if let Some(h) = BatchHeader::parse(&b.payload) {
                    if h.is_idempotent() {
                        record(&mut state, &h, b.base_offset as i64, now);
                        batches += 1;
                    }
                }
                offset = b.next_offset();
            }
        }
        if batches > 0 {
            tracing::info!(
                partition = log.name(),
                producers = state.by_id.len(),
                batches,
                "idempotent producer state rebuilt from the log"
            );
        }
        self.partitions.borrow_mut().entry(key).or_insert(state);
    }

    /// Judges a batch of producer `h.producer_id` against what this partition stored.
    pub fn check(&self, topic: &str, partition: u32, h: &BatchHeader) -> Verdict {
        let parts = self.partitions.borrow();
        let Some(p) = parts
            .get(&(topic.to_string(), partition))
            .and_then(|s| s.by_id.get(&h.producer_id))
        else {
            return Verdict::Append;
        };
        if h.producer_epoch < p.epoch {
            return Verdict::StaleEpoch;
        }
        if h.producer_epoch > p.epoch {
            return Verdict::Append;
        }
        if let Some(dup) = p
            .recent
            .iter()
            .find(|a| a.first_seq == h.base_sequence && a.last_seq == h.last_sequence())
        {
            return Verdict::Duplicate {
                base_offset: dup.base_offset,
            };
        }
        match p.recent.back() {
            Some(last) if h.base_sequence != next_seq(last.last_seq) => Verdict::OutOfOrder {
                expected: next_seq(last.last_seq),
            },
            _ => Verdict::Append,
        }
    }

    /// Remembers a batch that was stored at `base_offset`.
    pub fn stored(&self, topic: &str, partition: u32, h: &BatchHeader, base_offset: i64) {
        self.stored_at(topic, partition, h, base_offset, now_ms());
    }

    fn stored_at(&self, topic: &str, partition: u32, h: &BatchHeader, base_offset: i64, now: i64) {
        let mut parts = self.partitions.borrow_mut();
        let state = parts.entry((topic.to_string(), partition)).or_default();
        record(state, h, base_offset, now);
        state.expire(now, self.expiration_ms);
    }

    /// The producers a partition remembers, by id (its state loaded first, if need be, with
    /// [`ProducerStates::ensure_loaded`]).
    pub fn describe(&self, topic: &str, partition: u32) -> Vec<ProducerView> {
        let parts = self.partitions.borrow();
        let Some(p) = parts.get(&(topic.to_string(), partition)) else {
            return Vec::new();
        };
        let mut out: Vec<ProducerView> = p
            .by_id
            .iter()
            .filter_map(|(&id, pr)| {
                let last = pr.recent.back()?;
                Some(ProducerView {
                    producer_id: id,
                    epoch: pr.epoch,
                    last_sequence: last.last_seq,
                    last_timestamp: pr.last_timestamp,
                })
            })
            .collect();
        out.sort_by_key(|v| v.producer_id);
        out
    }

    /// Producer ids remembered for a partition.
    #[cfg(test)]
    fn producers(&self, topic: &str, partition: u32) -> usize {
        self.partitions
            .borrow()
            .get(&(topic.to_string(), partition))
            .map_or(0, |p| p.by_id.len())
    }

    /// Drops a partition's state, rebuilt from its log when next needed: a broker that
    /// becomes its leader learns what the previous leader stored from the log it copied.
    pub fn forget_partition(&self, topic: &str, partition: u32) {
        self.partitions
            .borrow_mut()
            .remove(&(topic.to_string(), partition));
    }

    pub fn forget_topic(&self, topic: &str) {
        self.partitions.borrow_mut().retain(|(t, _), _| t != topic);
    }
}

fn record(state: &mut PartitionProducers, h: &BatchHeader, base_offset: i64, now_ms: i64) {
    let p = state.by_id.entry(h.producer_id).or_default();
    p.last_write_ms = now_ms;
    p.last_timestamp = h.max_timestamp;
    if h.producer_epoch != p.epoch {
        p.epoch = h.producer_epoch;
        p.recent.clear();
    }
    p.recent.push_back(Appended {
        first_seq: h.base_sequence,
        last_seq: h.last_sequence(),
        base_offset,
    });
    while p.recent.len() > REMEMBERED {
        p.recent.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, n: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: n - 1,
            first_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: n,
        }
    }

    #[test]
    fn duplicates_gaps_and_epochs() {
        let s = ProducerStates::default();
        let b0 = header(1, 0, 0, 3);
        assert_eq!(s.check("t", 0, &b0), Verdict::Append);
        s.stored("t", 0, &b0, 100);
        assert_eq!(
            s.check("t", 0, &b0),
            Verdict::Duplicate { base_offset: 100 }
        );
        let b1 = header(1, 0, 3, 2);
        assert_eq!(s.check("t", 0, &b1), Verdict::Append);
        s.stored("t", 0, &b1, 103);
        assert_eq!(
            s.check("t", 0, &b0),
            Verdict::Duplicate { base_offset: 100 }
        );
        assert_eq!(
            s.check("t", 0, &header(1, 0, 9, 1)),
            Verdict::OutOfOrder { expected: 5 }
        );
        // Another partition, another producer: independent.
        assert_eq!(s.check("t", 1, &header(1, 0, 9, 1)), Verdict::Append);
        assert_eq!(s.check("t", 0, &header(2, 0, 9, 1)), Verdict::Append);
        // A new epoch starts over; the old epoch is fenced.
        let e1 = header(1, 1, 0, 1);
        assert_eq!(s.check("t", 0, &e1), Verdict::Append);
        s.stored("t", 0, &e1, 105);
        assert_eq!(s.check("t", 0, &header(1, 0, 5, 1)), Verdict::StaleEpoch);
        assert_eq!(
            s.describe("t", 0),
            vec![ProducerView {
                producer_id: 1,
                epoch: 1,
                last_sequence: 0,
                last_timestamp: 0
            }]
        );
        s.forget_topic("t");
        assert_eq!(s.check("t", 0, &header(1, 0, 5, 1)), Verdict::Append);
        assert!(s.describe("t", 0).is_empty());
    }

    #[test]
    fn producer_ids_expire_after_their_last_batch() {
        let day = PRODUCER_ID_EXPIRATION_MS;
        let s = ProducerStates::new(day);
        let t0 = 1_000_000_000_000;
        // A long run: a new producer id every minute for three days, one that keeps writing.
        let mut now = t0;
        for pid in 0..3 * 24 * 60 {
            s.stored_at("t", 0, &header(pid + 100, 0, 0, 1), pid, now);
            s.stored_at("t", 0, &header(1, 0, pid as i32, 1), pid, now);
            now += 60_000;
        }
        // About a day's worth of ids (plus the one checking interval), not three days'.
        let kept = s.producers("t", 0);
        assert!(kept <= 24 * 60 + 3, "{kept} producer ids kept");
        assert!(kept >= 24 * 60 - 1, "{kept} producer ids kept");
        // The active producer is still known (its retry is a duplicate), an expired one is new.
        let last = 3 * 24 * 60 - 1;
        assert_eq!(
            s.check("t", 0, &header(1, 0, last as i32, 1)),
            Verdict::Duplicate { base_offset: last }
        );
        assert_eq!(s.check("t", 0, &header(100, 0, 5, 1)), Verdict::Append);
    }
}
