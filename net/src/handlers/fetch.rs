//! Fetch with long polling: read every partition on its owner; if fewer than `min_bytes`
//! came back, wait until one of them grows or `max_wait_ms` passes, then read again.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::select_all;
use kafka_protocol::messages::FetchRequest;
use spate_engine::{EngineError, ReadBatch};

use super::{code, engine_code, Ctx};
use crate::codec::{response_head, ResponseChunks};
use crate::fetch_response::{self, PartitionData, TopicData};
use crate::Shard;

/// Longest wait a client may ask for.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// How a fetch's byte limit is shared between its partitions, which are read at once on
/// their owner shards: in request order each gets what it asks for while the limit lasts, and
/// never less than an equal share of it. What the reads of one fetch hold at once is so at
/// most twice the limit, and a partition late in a long request is not starved by those
/// before it.
struct Budget {
    left: usize,
    share: usize,
}

impl Budget {
    fn new(limit: usize, partitions: usize) -> Self {
        Self {
            left: limit,
            share: (limit / partitions.max(1)).max(1),
        }
    }

    /// The limit of the next partition, which asks for `asked` bytes.
    fn take(&mut self, asked: usize) -> usize {
        let got = asked.min(self.left.max(self.share));
        self.left = self.left.saturating_sub(got);
        got
    }
}

struct Wanted {
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// The client's `current_leader_epoch` (v9+; -1: not checked).
    current_leader_epoch: i32,
    /// The partition's owner shard, or the error it is answered with unread.
    owner: Result<usize, i16>,
}

struct Read {
    error: i16,
    high_watermark: i64,
    log_start_offset: i64,
    batches: Vec<ReadBatch>,
}

impl Read {
    fn error(error: i16) -> Self {
        Self {
            error,
            high_watermark: -1,
            log_start_offset: -1,
            batches: Vec::new(),
        }
    }
    fn bytes(&self) -> usize {
        self.batches.iter().map(|b| b.payload.len()).sum()
    }

    /// Where a long poll on this partition waits for the log to pass: just after what this
    /// read returned. `None`: the read stopped at its byte limit with more in the log, so
    /// waiting on this partition cannot add to the answer.
    fn wait_past(&self, offset: i64) -> Option<i64> {
        let seen = self
            .batches
            .last()
            .map_or(offset, |b| b.next_offset() as i64);
        (seen >= self.high_watermark).then_some(seen)
    }
}

/// The least time a read from the cold tier is given, whatever the Fetch's max wait (Kafka's
/// `remote.fetch.max.wait.ms` default): a shorter one would time out reads a working bucket
/// answers.
const REMOTE_READ_MIN_WAIT: Duration = Duration::from_millis(500);

async fn read_here(
    s: Rc<Shard>,
    topic: String,
    partition: u32,
    offset: i64,
    max_bytes: usize,
    current_leader_epoch: i32,
    max_wait: Duration,
) -> Read {
    // In a cluster consumers read from the leader only, in the epoch they know.
    let epoch = match s.leader_epoch_here(&topic, partition) {
        Ok(e) => e,
        Err(error) => return Read::error(error),
    };
    if let Some(error) = leader_epoch_error(current_leader_epoch, epoch) {
        return Read::error(error);
    }
    let Some(log) = s.logs.get(&topic, partition) else {
        return Read::error(code::UNKNOWN_TOPIC_OR_PARTITION);
    };
    let offsets = log.offsets();
    let mut read = Read {
        error: code::NONE,
        high_watermark: offsets.high_watermark as i64,
        log_start_offset: offsets.log_start as i64,
        batches: Vec::new(),
    };
    if offset < 0 {
        read.error = code::OFFSET_OUT_OF_RANGE;
        return read;
    }
    // A read below the local start goes to the cold tier: bounded by the Fetch's max wait,
    // so that a slow or unreachable bucket delays this answer by no more than the client
    // asked. The tier's call goes on (into the chunk cache, where the client's next fetch
    // finds it); this answer is a retriable error.
    let remote_wait = max_wait.max(REMOTE_READ_MIN_WAIT);
    let result = if (offset as u64) < offsets.local_start {
        match glommio::timer::timeout(remote_wait, async {
            Ok(log.read(offset as u64, max_bytes).await)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => {
                spate_engine::warn_limited!(
                    "remote read past max wait",
                    topic = %topic,
                    partition,
                    offset,
                    "a read from the cold tier did not finish within {} ms (the fetch's max wait): answered KAFKA_STORAGE_ERROR, the client retries",
                    remote_wait.as_millis()
                );
                read.error = code::KAFKA_STORAGE_ERROR;
                return read;
            }
        }
    } else {
        log.read(offset as u64, max_bytes).await
    };
    match result {
        Ok(b) => read.batches = b,
        Err(e @ EngineError::OffsetOutOfRange { .. }) => read.error = engine_code(&e),
        Err(e) => {
            spate_engine::warn_limited!("fetch failed", topic = %topic, partition, offset, "fetch failed: {e}");
            read.error = engine_code(&e);
        }
    }
    read
}

async fn wait_here(s: Rc<Shard>, topic: String, partition: u32, offset: i64, wait: Duration) {
    let Some(log) = s.logs.get(&topic, partition) else {
        return;
    };
    let offset = offset.max(0) as u64;
    futures_lite::future::or(log.wait_for_data(offset), glommio::timer::sleep(wait)).await;
}

/// Reads every wanted partition, one mesh call per owner shard; answers in `wanted`'s order.
async fn read_round(shard: &Rc<Shard>, wanted: &[Wanted], max_wait: Duration) -> Vec<Read> {
    let mut reads: Vec<Option<Read>> = Vec::with_capacity(wanted.len());
    let mut asks = Vec::new();
    let mut slots = Vec::new();
    for (slot, w) in wanted.iter().enumerate() {
        match w.owner {
            Ok(owner) => {
                reads.push(None);
                slots.push(slot);
                let ask = (
                    w.topic.clone(),
                    w.partition as u32,
                    w.offset,
                    w.max_bytes,
                    w.current_leader_epoch,
                );
                asks.push((owner, ask));
            }
            Err(error) => reads.push(Some(Read::error(error))),
        }
    }
    let answers = shard
        .mesh
        .call_each(
            asks,
            move |s, (topic, partition, offset, max_bytes, epoch)| {
                read_here(s, topic, partition, offset, max_bytes, epoch, max_wait)
            },
        )
        .await;
    for (slot, answer) in slots.into_iter().zip(answers) {
        reads[slot] = Some(answer.unwrap_or_else(|_| Read::error(code::UNKNOWN_SERVER_ERROR)));
    }
    reads
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Read::error(code::UNKNOWN_SERVER_ERROR)))
        .collect()
}

/// Waits until any of these partitions (of this shard) grows past its offset, or `wait`.
async fn wait_any_here(s: Rc<Shard>, parts: Vec<(String, u32, i64)>, wait: Duration) {
    let waits: Vec<_> = parts
        .into_iter()
        .map(|(topic, partition, offset)| {
            Box::pin(wait_here(s.clone(), topic, partition, offset, wait))
        })
        .collect();
    if waits.is_empty() {
        return;
    }
    select_all(waits).await;
}

/// The first version that names topics by id.
const TOPIC_IDS: i16 = 13;

/// Why a request is refused as a whole for its fetch session (KIP-227), if it is. Spate
/// creates no sessions: every answer says session 0, which tells a client that sessions are
/// not in use, so it sends full requests (epoch 0, or -1 for "no session", from v7). Any other
/// epoch is an incremental request in a session this broker does not hold, which Kafka answers
/// with FETCH_SESSION_ID_NOT_FOUND and no topics (the client then starts over with a full
/// request). A full request naming a session (a client closing one) is served as a full fetch.
fn session_error(version: i16, session_id: i32, session_epoch: i32) -> Option<i16> {
    const INITIAL_EPOCH: i32 = 0;
    const FINAL_EPOCH: i32 = -1;
    if version < 7 || session_epoch == INITIAL_EPOCH || session_epoch == FINAL_EPOCH {
        return None;
    }
    tracing::debug!(
        session_id,
        session_epoch,
        "incremental fetch refused: this broker holds no fetch sessions"
    );
    Some(code::FETCH_SESSION_ID_NOT_FOUND)
}

/// A partition's `current_leader_epoch` (v9+; negative, -1 by default: not checked) against
/// its leader epoch, as Kafka checks it: an older epoch is FENCED_LEADER_EPOCH (the client's
/// metadata is stale), a newer one UNKNOWN_LEADER_EPOCH (this broker's is, as the client sees
/// it).
fn leader_epoch_error(current_leader_epoch: i32, leader_epoch: i32) -> Option<i16> {
    if current_leader_epoch < 0 {
        return None;
    }
    spate_replication::follower::Refusal::check_epoch(leader_epoch, current_leader_epoch)
        .err()
        .map(|r| r.code())
}

pub async fn fetch(shard: &Rc<Shard>, ctx: &Ctx, req: FetchRequest) -> ResponseChunks {
    if let Some(error) = session_error(ctx.version, req.session_id, req.session_epoch) {
        return fetch_response::encode_with_error(ctx.version, response_head(ctx), error, &[]);
    }
    let started = Instant::now();
    let wait = Duration::from_millis(req.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let min_bytes = req.min_bytes.max(0) as usize;
    // At most the broker's `kafka.fetch_max_bytes` (Kafka's fetch.max.bytes) whatever the
    // request asks. A partition's first batch is returned whole even when it is larger than
    // the partition's share, as Kafka does, so a consumer always makes progress.
    let broker_max = shard.cluster.config.fetch_max_bytes;
    let total_max = if ctx.version >= 3 && req.max_bytes > 0 {
        (req.max_bytes as usize).min(broker_max)
    } else {
        broker_max
    };
    let mut budget = Budget::new(
        total_max,
        req.topics.iter().map(|t| t.partitions.len()).sum(),
    );
    let mut wanted = Vec::new();
    let mut layout: Vec<(String, [u8; 16], usize)> = Vec::new();
    for t in &req.topics {
        // v13+ names a topic by id (KIP-516) and is answered by id; an id no topic has is
        // UNKNOWN_TOPIC_ID for each of its partitions, as Kafka answers.
        let topic_id = *t.topic_id.as_bytes();
        let name = if ctx.version >= TOPIC_IDS {
            shard.cluster.topic_name_of(&topic_id)
        } else {
            Some(t.topic.0.as_str().to_string())
        };
        layout.push((
            name.clone().unwrap_or_default(),
            topic_id,
            t.partitions.len(),
        ));
        for p in &t.partitions {
            let owner = match &name {
                None => Err(code::UNKNOWN_TOPIC_ID),
                Some(name) => shard
                    .cluster
                    .owner(name, p.partition)
                    .ok_or(code::UNKNOWN_TOPIC_OR_PARTITION),
            };
            wanted.push(Wanted {
                owner,
                topic: name.clone().unwrap_or_default(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: budget.take(p.partition_max_bytes.max(0) as usize),
                current_leader_epoch: p.current_leader_epoch,
            });
        }
    }
    // One mesh call per owner shard and phase: a round reads all of an owner's partitions in
    // one call; a wait is one call per owner that returns when any of its partitions grows.
    let reads = loop {
        let reads = read_round(shard, &wanted, wait).await;
        let bytes: usize = reads.iter().map(Read::bytes).sum();
        let errors = reads.iter().any(|r| r.error != code::NONE);
        let elapsed = started.elapsed();
        if bytes >= min_bytes.max(1) || errors || elapsed >= wait || wanted.is_empty() {
            break reads;
        }
        // Wait for any partition to grow past what this round read (not past the client's
        // offset: a partition holding less than min_bytes would wake the wait at once, and the
        // loop would re-read every partition until the deadline), or for the deadline.
        let remaining = wait - elapsed;
        let mut growable: BTreeMap<usize, Vec<(String, u32, i64)>> = BTreeMap::new();
        for (w, r) in wanted.iter().zip(&reads) {
            if let (Ok(owner), Some(past)) = (w.owner, r.wait_past(w.offset)) {
                growable.entry(owner).or_default().push((
                    w.topic.clone(),
                    w.partition as u32,
                    past,
                ));
            }
        }
        if growable.is_empty() {
            // Every partition stopped at its byte limit: this is all the answer can hold.
            break reads;
        }
        let waits: Vec<_> = growable
            .into_iter()
            .map(|(owner, parts)| {
                let shard = shard.clone();
                Box::pin(async move {
                    let _ = shard
                        .call(owner, move |s| wait_any_here(s, parts, remaining))
                        .await;
                }) as std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>
            })
            .collect();
        futures_lite::future::or(
            async {
                select_all(waits).await;
            },
            glommio::timer::sleep(remaining),
        )
        .await;
        // A partition that grew: read again, and wait again past the new end while the answer
        // holds less than min_bytes and time remains.
    };
    let mut items = wanted.iter().zip(reads);
    let mut hints = super::leader_hints::Hints::new(shard);
    let topics: Vec<TopicData> = layout
        .into_iter()
        .map(|(name, topic_id, n)| TopicData {
            partitions: (0..n)
                .filter_map(|_| items.next())
                .map(|(w, r)| PartitionData {
                    partition: w.partition,
                    error: r.error,
                    high_watermark: r.high_watermark,
                    log_start_offset: r.log_start_offset,
                    batches: r.batches,
                    current_leader: hints.leader(&w.topic, w.partition, r.error),
                })
                .collect(),
            name,
            topic_id,
        })
        .collect();
    fetch_response::encode(ctx.version, response_head(ctx), &topics, &hints.endpoints())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_requests_are_served_as_there_are_no_sessions() {
        // Before v7 there are no sessions; from v7 epoch 0 (open) and -1 (none) are full.
        assert_eq!(session_error(6, 5, 3), None);
        assert_eq!(session_error(7, 0, 0), None);
        assert_eq!(session_error(12, 0, -1), None);
        assert_eq!(session_error(13, 42, 0), None);
        for (id, epoch) in [(42, 1), (0, 1), (42, -2), (7, i32::MAX)] {
            assert_eq!(
                session_error(13, id, epoch),
                Some(code::FETCH_SESSION_ID_NOT_FOUND),
                "session {id} epoch {epoch}"
            );
        }
    }

    #[test]
    fn the_current_leader_epoch_is_checked_against_the_partitions() {
        assert_eq!(leader_epoch_error(-1, 3), None);
        assert_eq!(leader_epoch_error(-7, 3), None);
        assert_eq!(leader_epoch_error(3, 3), None);
        assert_eq!(leader_epoch_error(4, 3), Some(code::UNKNOWN_LEADER_EPOCH));
        assert_eq!(leader_epoch_error(2, 3), Some(code::FENCED_LEADER_EPOCH));
        // A single broker's epoch is 0: no non-negative epoch is older.
        assert_eq!(leader_epoch_error(0, crate::LEADER_EPOCH), None);
        assert_eq!(crate::LEADER_EPOCH, 0);
    }

    #[test]
    fn a_fetch_reads_at_most_twice_its_limit_and_every_partition_gets_a_share() {
        // 1000 partitions asking for 1 GiB each under a 55 MiB limit.
        let limit = 55 << 20;
        let mut b = Budget::new(limit, 1000);
        let caps: Vec<usize> = (0..1000).map(|_| b.take(1 << 30)).collect();
        let total: usize = caps.iter().sum();
        assert!(total <= 2 * limit, "{total}");
        assert_eq!(caps[0], limit);
        assert!(caps.iter().all(|&c| c >= limit / 1000));
        // Partitions asking for little leave the rest to those after them.
        let mut b = Budget::new(10 << 20, 4);
        assert_eq!(b.take(1 << 20), 1 << 20);
        assert_eq!(b.take(1 << 20), 1 << 20);
        assert_eq!(b.take(100 << 20), 8 << 20);
        assert_eq!(b.take(100 << 20), (10 << 20) / 4);
    }
}
