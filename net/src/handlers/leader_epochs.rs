//! OffsetForLeaderEpoch, as consumers use it (KIP-320): after a leader change, librdkafka and
//! the Java client ask the partition's leader where the leader epoch of their position ends,
//! and a position past that end means the log they read from was truncated. Answered on the
//! partition's owner shard from the log's leader-epoch index: the largest epoch at or below the
//! one asked and where it ends (for the current epoch, the log end). Only the leader answers
//! (NOT_LEADER_OR_FOLLOWER elsewhere), with `current_leader_epoch` checked as Fetch checks it.
//! (Spate's followers ask their leaders over their own sessions, not with this API.)

use std::rc::Rc;

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::*;

use super::{code, Ctx};
use crate::Shard;

async fn end_here(
    s: Rc<Shard>,
    topic: String,
    partition: u32,
    current_leader_epoch: i32,
    epoch: i32,
) -> (i16, i32, i64) {
    let leader_epoch = match s.leader_epoch_here(&topic, partition) {
        Ok(e) => e,
        Err(error) => return (error, -1, -1),
    };
    if current_leader_epoch >= 0 && current_leader_epoch < leader_epoch {
        return (code::FENCED_LEADER_EPOCH, -1, -1);
    }
    if current_leader_epoch > leader_epoch {
        return (code::UNKNOWN_LEADER_EPOCH, -1, -1);
    }
    let Some(log) = s.logs.get(&topic, partition) else {
        return (code::UNKNOWN_TOPIC_OR_PARTITION, -1, -1);
    };
    match log.end_offset_for_epoch(epoch) {
        Some((e, end)) => (code::NONE, e, end as i64),
        // A log with no epoch at or below it (or no batch at all): Kafka's undefined answer.
        None if log.leader_epochs().is_empty() && epoch >= leader_epoch => {
            (code::NONE, leader_epoch, log.offsets().log_end as i64)
        }
        None => (code::NONE, -1, -1),
    }
}

pub async fn offset_for_leader_epoch(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.topic.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let answer = match shard.cluster.owner(&name, p.partition) {
                None => (code::UNKNOWN_TOPIC_OR_PARTITION, -1, -1),
                Some(owner) => {
                    let (topic, partition) = (name.clone(), p.partition as u32);
                    let (current, epoch) = (p.current_leader_epoch, p.leader_epoch);
                    shard
                        .call(owner, move |s| {
                            Box::pin(end_here(s, topic, partition, current, epoch))
                        })
                        .await
                        .unwrap_or((code::UNKNOWN_SERVER_ERROR, -1, -1))
                }
            };
            partitions.push(
                EpochEndOffset::default()
                    .with_partition(p.partition)
                    .with_error_code(answer.0)
                    .with_leader_epoch(answer.1)
                    .with_end_offset(answer.2),
            );
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions),
        );
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
