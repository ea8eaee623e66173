//! What admin tools describe beyond Metadata: DescribeTopicPartitions (KIP-966, paged),
//! DescribeLogDirs (partition sizes on the data disk) and DescribeProducers (idempotent
//! producer state per partition).

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::*;

use super::{code, sb, topic_name, Ctx};
use crate::{Shard, OFFSETS_TOPIC};

/// Kafka's `topic_authorized_operations` when authorized operations were not asked for.
const OPERATIONS_NOT_ASKED: i32 = i32::MIN;

/// DescribeTopicPartitions: the topics asked (every topic if none), in name order, from the
/// cursor on, with at most `response_partition_limit` partitions in all; `next_cursor` says
/// where the next page starts.
pub async fn describe_topic_partitions(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let meta = shard.cluster.metadata();
    let node_id = shard.cluster.node_id();
    let mut names: Vec<String> = if req.topics.is_empty() {
        meta.topics.iter().map(|t| t.name.clone()).collect()
    } else {
        req.topics
            .iter()
            .map(|t| t.name.0.as_str().to_string())
            .collect()
    };
    names.sort();
    names.dedup();
    let (from_topic, from_partition) = match &req.cursor {
        Some(c) => (
            c.topic_name.0.as_str().to_string(),
            c.partition_index.max(0),
        ),
        None => (String::new(), 0),
    };
    let mut left = usize::try_from(req.response_partition_limit)
        .unwrap_or(0)
        .clamp(1, 2000);
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names.into_iter().filter(|n| *n >= from_topic) {
        let Some(t) = shard.cluster.topic(&name) else {
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                    .with_name(Some(topic_name(&name)))
                    .with_topic_authorized_operations(OPERATIONS_NOT_ASKED),
            );
            continue;
        };
        if left == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(&name))
                    .with_partition_index(0),
            );
            break;
        }
        let first = if name == from_topic {
            from_partition
        } else {
            0
        };
        let count = t.partitions() as i32;
        let mut partitions = Vec::new();
        let mut p = first;
        while p < count && left > 0 {
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(p)
                    .with_leader_id(BrokerId(node_id))
                    .with_leader_epoch(crate::LEADER_EPOCH)
                    .with_replica_nodes(vec![BrokerId(node_id)])
                    .with_isr_nodes(vec![BrokerId(node_id)])
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new())),
            );
            p += 1;
            left -= 1;
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(topic_name(&name)))
                .with_topic_id(uuid::Uuid::from_bytes(t.topic_id))
                .with_is_internal(name == OFFSETS_TOPIC)
                .with_partitions(partitions)
                .with_topic_authorized_operations(OPERATIONS_NOT_ASKED),
        );
        if p < count {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(topic_name(&name))
                    .with_partition_index(p),
            );
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}

/// (topic, partitions) asked, or every partition of every topic.
fn partitions_asked(
    shard: &Shard,
    asked: Option<Vec<(String, Vec<i32>)>>,
) -> Vec<(String, Vec<i32>)> {
    match asked {
        Some(a) => a,
        None => shard
            .cluster
            .metadata()
            .topics
            .iter()
            .map(|t| (t.name.clone(), (0..t.partitions() as i32).collect()))
            .collect(),
    }
}

/// DescribeLogDirs: the one data directory, its disk's size and free space (v4), and the
/// size of every partition asked for that exists (unknown ones are left out, as Kafka does).
pub async fn describe_log_dirs(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    // The cleaner's entry only when one topic is named (as `spate topic describe` names
    // it): a tool listing every log dir (kafka-log-dirs.sh, kafka-python, which name every
    // topic) sees the real ones and the tier only.
    let named = req.topics.as_ref().is_some_and(|t| t.len() == 1);
    let asked = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.topic.0.as_str().to_string(), t.partitions))
            .collect()
    });
    let asked = partitions_asked(shard, asked);
    // Every partition's size from its owner: one mesh call per owner shard.
    let asks: Vec<_> = asked
        .iter()
        .flat_map(|(name, parts)| {
            parts.iter().filter_map(|p| {
                let owner = shard.cluster.owner(name, *p)?;
                Some((owner, (name.clone(), *p)))
            })
        })
        .collect();
    let sizes = shard
        .mesh
        .call_each(asks, |s, (name, p)| async move {
            let found = s.logs.get(&name, p as u32).map(|log| {
                let tier = log.tier_status().map(|t| {
                    // Upload lag: offsets written and visible that the tier does not have.
                    let lag = log.offsets().high_watermark.saturating_sub(t.remote_end);
                    (t.remote_bytes, lag)
                });
                let cleaner = log
                    .dirty_state(now_ms())
                    .map(|d| (d.dirty_ppm(), d.last_cleaned_ms));
                (log.stats().size_bytes, tier, cleaner)
            });
            (name, p, found)
        })
        .await;
    let mut local: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    let mut remote: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    let mut cleaner: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for (name, p, found) in sizes.into_iter().flatten() {
        let Some((size, tier, cleaned)) = found else {
            continue;
        };
        if let Some((ppm, last_ms)) = cleaned {
            cleaner.entry(name.clone()).or_default().push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(p)
                    .with_partition_size(ppm as i64)
                    .with_offset_lag(last_ms),
            );
        }
        local.entry(name.clone()).or_default().push(
            DescribeLogDirsPartition::default()
                .with_partition_index(p)
                .with_partition_size(size as i64),
        );
        if let Some((bytes, lag)) = tier {
            remote.entry(name).or_default().push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(p)
                    .with_partition_size(bytes as i64)
                    .with_offset_lag(lag as i64),
            );
        }
    }
    let topics_of = |by_topic: &mut BTreeMap<String, Vec<DescribeLogDirsPartition>>| {
        asked
            .iter()
            .filter_map(|(name, _)| {
                by_topic.remove(name).map(|partitions| {
                    DescribeLogDirsTopic::default()
                        .with_name(topic_name(name))
                        .with_partitions(partitions)
                })
            })
            .collect::<Vec<_>>()
    };
    let dir = &shard.cluster.data_dir;
    let (total, free) = spate_engine::space::statvfs(dir)
        .map_or((-1, -1), |(total, free)| (total as i64, free as i64));
    let mut results = vec![DescribeLogDirsResult::default()
        .with_log_dir(sb(&dir.display().to_string()))
        .with_topics(topics_of(&mut local))
        .with_total_bytes(total)
        .with_usable_bytes(free)];
    // The cold tier, as a second "log dir": its partitions' remote bytes, and as offset lag
    // what is not uploaded yet; KAFKA_STORAGE_ERROR if a call failed in the last minute.
    if let Some(tier) = shard.logs.tier() {
        let failing = tier.last_error().is_some_and(|(_, at)| {
            at.elapsed().unwrap_or_default() < std::time::Duration::from_secs(60)
        });
        results.push(
            DescribeLogDirsResult::default()
                .with_error_code(if failing {
                    code::KAFKA_STORAGE_ERROR
                } else {
                    0
                })
                .with_log_dir(sb(tier.describe()))
                .with_topics(topics_of(&mut remote))
                .with_total_bytes(-1)
                .with_usable_bytes(-1),
        );
    }
    // Compacted partitions' cleaner state, as a last "log dir" named CLEANER_DIR (only when
    // the request names one topic and some partition of it is compacted): dirty ratio in parts
    // per million as the size, the last pass's time (ms since the epoch, 0: none since the
    // start) as the offset lag.
    if named && !cleaner.is_empty() {
        results.push(
            DescribeLogDirsResult::default()
                .with_log_dir(sb(CLEANER_DIR))
                .with_topics(topics_of(&mut cleaner))
                .with_total_bytes(-1)
                .with_usable_bytes(-1),
        );
    }
    DescribeLogDirsResponse::default().with_results(results)
}

/// The name of DescribeLogDirs' entry for the log cleaner (`spate topic describe` reads it).
pub const CLEANER_DIR: &str = "log cleaner (size: dirty ratio, ppm; offset lag: last pass, ms)";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// DescribeProducers: the idempotent producers each partition remembers (no transactions:
/// coordinator epoch and transaction start are -1).
pub async fn describe_producers(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    // Every partition's producers from its owner: one mesh call per owner shard.
    let asks: Vec<_> = req
        .topics
        .iter()
        .flat_map(|t| {
            let name = t.name.0.as_str().to_string();
            t.partition_indexes.iter().filter_map(move |p| {
                let owner = shard.cluster.owner(&name, *p)?;
                Some((owner, (name.clone(), *p)))
            })
        })
        .collect();
    let found = shard
        .mesh
        .call_each(asks, |s, (name, p)| async move {
            let producers = match s.logs.get(&name, p as u32) {
                Some(log) => {
                    s.producers.ensure_loaded(&name, p as u32, &log).await;
                    Some(s.producers.describe(&name, p as u32))
                }
                None => None,
            };
            ((name, p), producers)
        })
        .await;
    let found: HashMap<(String, i32), _> = found
        .into_iter()
        .flatten()
        .filter_map(|(key, producers)| Some((key, producers?)))
        .collect();
    let mut topics = Vec::new();
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let partitions = t
            .partition_indexes
            .iter()
            .map(|&p| {
                let Some(producers) = found.get(&(name.clone(), p)) else {
                    return PartitionResponse::default()
                        .with_partition_index(p)
                        .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION);
                };
                PartitionResponse::default()
                    .with_partition_index(p)
                    .with_active_producers(
                        producers
                            .iter()
                            .map(|v| {
                                ProducerState::default()
                                    .with_producer_id(ProducerId(v.producer_id))
                                    .with_producer_epoch(i32::from(v.epoch))
                                    .with_last_sequence(v.last_sequence)
                                    .with_last_timestamp(v.last_timestamp)
                                    .with_coordinator_epoch(-1)
                                    .with_current_txn_start_offset(-1)
                            })
                            .collect(),
                    )
            })
            .collect();
        topics.push(
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DescribeProducersResponse::default().with_topics(topics)
}
