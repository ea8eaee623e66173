//! ListOffsets: earliest (-2), latest (-1), the record with the largest timestamp (-3), the
//! earliest local offset (-4), the latest tiered one (-5), or the first offset at or after a
//! timestamp.

use std::rc::Rc;

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::*;

use super::{code, engine_code, Ctx};
use crate::batch::BatchHeader;
use crate::decompress;
use crate::Shard;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
/// The record with the largest timestamp (v7+, KIP-734).
const MAX_TIMESTAMP: i64 = -3;
/// The oldest offset on local disk (v8+, KIP-1005): the log start, nothing being tiered yet.
const EARLIEST_LOCAL: i64 = -4;
/// The last offset in the remote tier (v9+, KIP-1005): none, as Kafka answers for a topic
/// without remote storage.
const LATEST_TIERED: i64 = -5;

async fn lookup_here(
    s: Rc<Shard>,
    topic: String,
    partition: u32,
    timestamp: i64,
) -> (i16, i64, i64) {
    if let Err(error) = s.leader_epoch_here(&topic, partition) {
        return (error, -1, -1);
    }
    let Some(log) = s.logs.get(&topic, partition) else {
        return (code::UNKNOWN_TOPIC_OR_PARTITION, -1, -1);
    };
    let offsets = log.offsets();
    let log_start = offsets.log_start as i64;
    let limit = s.cluster.config.max_request_bytes;
    match timestamp {
        // What a consumer can read up to (Kafka's LATEST for read_uncommitted).
        LATEST => (code::NONE, -1, offsets.high_watermark as i64),
        EARLIEST => (code::NONE, -1, log_start),
        EARLIEST_LOCAL => (code::NONE, -1, offsets.local_start as i64),
        // The last offset in the cold tier (-1: none there).
        LATEST_TIERED => (
            code::NONE,
            -1,
            log.remote_manifest()
                .filter(|m| !m.segments.is_empty())
                .map_or(-1, |m| m.next_offset() as i64 - 1),
        ),
        MAX_TIMESTAMP => match log.offset_of_max_timestamp().await {
            Ok(Some((offset, ts))) => {
                let (offset, ts) = exact_record(&log, offset, ts, limit)
                    .await
                    .unwrap_or((offset as i64, ts));
                (code::NONE, ts, offset.max(log_start))
            }
            Ok(None) => (code::NONE, -1, -1),
            Err(e) => (engine_code(&e), -1, -1),
        },
        t if t < 0 => (code::INVALID_REQUEST, -1, -1),
        t => match log.offset_for_timestamp(t).await {
            Ok(Some((offset, ts))) => {
                let (offset, ts) = exact_record(&log, offset, t, limit)
                    .await
                    .unwrap_or((offset as i64, ts));
                (code::NONE, ts, offset.max(log_start))
            }
            Ok(None) => (code::NONE, -1, -1),
            Err(e) => (engine_code(&e), -1, -1),
        },
    }
}

/// The engine finds the batch; the answer is the first record in it at or after `t`. The
/// batch is decoded (decompressed if need be) to find it.
/// A batch that does not decode within `max_batch_bytes` decompressed (the broker's
/// message.max.bytes) answers with its first offset.
async fn exact_record(
    log: &spate_engine::PartitionLog,
    batch_offset: u64,
    t: i64,
    max_batch_bytes: usize,
) -> Option<(i64, i64)> {
    let batch = log.read(batch_offset, 1).await.ok()?.into_iter().next()?;
    let stored_base = BatchHeader::parse(&batch.payload)?.base_offset;
    let mut payload = batch.payload.clone();
    let set = match decompress::decode_batch(&mut payload, max_batch_bytes) {
        Ok(set) => set,
        Err(e) => {
            spate_engine::warn_limited!(
                "list offsets: undecodable batch",
                partition = log.name(),
                offset = batch_offset,
                "ListOffsets by time answers with the batch's first offset: its records do not decode: {e}"
            );
            return None;
        }
    };
    set.records.iter().find(|r| r.timestamp >= t).map(|r| {
        (
            batch.base_offset as i64 + (r.offset - stored_base),
            r.timestamp,
        )
    })
}

/// ListOffsets: every partition looked up on its owner, one mesh call per owner shard.
pub async fn list_offsets(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let version = ctx.version;
    let mut asks = Vec::new();
    // Whether each partition, in request order, has an owner (and so an answer in `answers`).
    let mut owned = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str().to_string();
        for p in &t.partitions {
            let owner = shard.cluster.owner(&name, p.partition_index);
            owned.push(owner.is_some());
            if let Some(owner) = owner {
                asks.push((owner, (name.clone(), p.partition_index, p.timestamp)));
            }
        }
    }
    let mut owned = owned.into_iter();
    let mut answers = shard
        .mesh
        .call_each(asks, |s, (name, index, ts)| {
            lookup_here(s, name, index as u32, ts)
        })
        .await
        .into_iter();
    let mut topics = Vec::new();
    for t in req.topics {
        let partitions = t
            .partitions
            .iter()
            .map(|p| {
                let index = p.partition_index;
                let (error, timestamp, offset) = match owned.next() {
                    Some(false) | None => (code::UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
                    Some(true) => answers.next().and_then(Result::ok).unwrap_or((
                        code::UNKNOWN_SERVER_ERROR,
                        -1,
                        -1,
                    )),
                };
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(index)
                    .with_error_code(error)
                    .with_timestamp(timestamp)
                    .with_offset(offset)
                    // One leader epoch so far (Metadata says 0 too); the field is v4+.
                    .with_leader_epoch(if version >= 4 && offset >= 0 { 0 } else { -1 })
            })
            .collect();
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}
