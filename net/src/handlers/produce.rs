//! Produce (acks 0, 1 and all) and InitProducerId. Batches are checked where the request
//! arrived (CRC, magic, lengths), then appended on the partition's owner shard as slices of
//! the request buffer: the one copy of record bytes is the engine's into its aligned buffer.

use std::collections::BTreeMap;
use std::rc::Rc;

use futures_channel::oneshot;
use futures_util::future::join_all;
use kafka_protocol::messages::produce_request::PartitionProduceData;
use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::*;
use spate_engine::{AppendBatch, Durability};

use super::{code, engine_code, sb, Ctx, Outcome, Queued};
use crate::batch::{self, Batch};
use crate::codec::encode_response;
use crate::produce_policy;
use crate::producers::Verdict;
use crate::Shard;
use spate_mesh::HomeSender;
use spate_replication::pipeline::Leading;

/// Kafka's error 6 (NOT_LEADER_OR_FOLLOWER, formerly NOT_LEADER_FOR_PARTITION).
const NOT_LEADER_FOR_PARTITION: i16 = 6;
/// The first version that names topics by id.
const TOPIC_IDS: i16 = 13;

#[derive(Debug, Clone)]
struct PartitionResult {
    error: i16,
    base_offset: i64,
    log_start_offset: i64,
    /// The broker's time written into the batches of a LogAppendTime topic; else -1.
    log_append_time_ms: i64,
    message: Option<String>,
}

impl PartitionResult {
    fn error(error: i16, message: impl Into<Option<String>>) -> Self {
        Self {
            error,
            base_offset: -1,
            log_start_offset: -1,
            log_append_time_ms: -1,
            message: message.into(),
        }
    }
}

/// A partition's checked batches, on their way to the owner shard.
struct PartitionAppend {
    topic: String,
    partition: u32,
    batches: Vec<Batch>,
    log_append_time_ms: i64,
    /// How long acks=all may wait for the replicas (the request's `timeout_ms`).
    timeout_ms: u64,
}

/// Produce. `queued` fires once every partition's batches are queued in its log (or refused):
/// the connection may then start its next request, whose batches come after these.
///
/// Batches are checked here, then sent to their owners in one mesh call per owner shard,
/// which appends all of that owner's partitions. That call answers twice, one message per
/// phase: once every batch it carries is queued in its log (the connection's next request
/// may start), then with the results. Record data travels as the request's `Bytes`.
pub async fn produce(shard: &Rc<Shard>, ctx: &Ctx, req: ProduceRequest, queued: Queued) -> Outcome {
    let acks = req.acks;
    let durability = match acks {
        -1 => Some(Durability::Durable),
        0 | 1 => Some(Durability::Appended),
        _ => None,
    };
    // One result per partition in request order; those refused here are filled at once.
    let mut results: Vec<Option<PartitionResult>> = Vec::new();
    let mut by_owner: BTreeMap<usize, Vec<(usize, PartitionAppend)>> = BTreeMap::new();
    let mut layout: Vec<(TopicName, uuid::Uuid, Vec<i32>)> = Vec::new();
    for topic in req.topic_data {
        // v13+ names a topic by id (KIP-516); an id no topic has is UNKNOWN_TOPIC_ID for each
        // of its partitions, as Kafka answers. (v12 differs from v11 only for transactions v2,
        // KIP-890, which a producer cannot start here: FindCoordinator names no transaction
        // coordinator and InitProducerId refuses transactional ids.)
        let name = if ctx.version >= TOPIC_IDS {
            shard.cluster.topic_name_of(topic.topic_id.as_bytes())
        } else {
            Some(topic.name.0.as_str().to_string())
        };
        let mut parts = Vec::new();
        for pd in topic.partition_data {
            parts.push(pd.index);
            let slot = results.len();
            let checked = match &name {
                Some(name) => check_partition(shard, name, pd, durability, acks),
                None => Err(refused_acks(durability, acks)
                    .unwrap_or_else(|| PartitionResult::error(code::UNKNOWN_TOPIC_ID, None))),
            };
            match checked {
                Ok((owner, mut append)) => {
                    append.timeout_ms = req.timeout_ms.max(0) as u64;
                    results.push(None);
                    by_owner.entry(owner).or_default().push((slot, append));
                }
                Err(refused) => results.push(Some(refused)),
            }
        }
        layout.push((topic.name, topic.topic_id, parts));
    }
    let mut owners_queued = Vec::new();
    let calls: Vec<_> = by_owner
        .into_iter()
        .map(|(owner, parts)| {
            let (slots, parts): (Vec<usize>, Vec<PartitionAppend>) = parts.into_iter().unzip();
            let (owner_queued, owner_queued_rx) = shard.home_channel::<()>();
            owners_queued.push(owner_queued_rx);
            let shard = shard.clone();
            // Checked above: only partitions with a valid acks get here.
            let durability = durability.unwrap_or(Durability::Appended);
            async move {
                let count = parts.len();
                let answers = shard
                    .call(owner, move |s| {
                        append_on_owner(s, parts, durability, owner_queued)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        vec![
                            PartitionResult::error(code::UNKNOWN_SERVER_ERROR, e.to_string());
                            count
                        ]
                    });
                (slots, answers)
            }
        })
        .collect();
    let all_queued = async move {
        // A dropped sender (refused, or the shard gone) counts as queued.
        join_all(owners_queued).await;
        let _ = queued.send(());
    };
    let (answers, ()) = futures_util::future::join(join_all(calls), all_queued).await;
    for (slots, answers) in answers {
        for (slot, answer) in slots.into_iter().zip(answers) {
            if let Some(r) = results.get_mut(slot) {
                *r = Some(answer);
            }
        }
    }
    let mut results = results.into_iter();
    if acks == 0 {
        return Outcome::Silent;
    }
    let version = ctx.version;
    let mut hints = super::leader_hints::Hints::new(shard);
    let responses = layout
        .into_iter()
        .map(|(name, topic_id, parts)| {
            let topic = if version >= TOPIC_IDS {
                shard
                    .cluster
                    .topic_name_of(topic_id.as_bytes())
                    .unwrap_or_default()
            } else {
                name.0.as_str().to_string()
            };
            let partition_responses = parts
                .into_iter()
                .map(|index| {
                    let mut r = results.next().flatten().unwrap_or_else(|| {
                        PartitionResult::error(code::UNKNOWN_SERVER_ERROR, None)
                    });
                    // Produce v4 is how a client says it knows KAFKA_STORAGE_ERROR; an older
                    // one gets NOT_LEADER_FOR_PARTITION, retriable too, as Kafka answers.
                    if version < 4 && r.error == code::KAFKA_STORAGE_ERROR {
                        r.error = NOT_LEADER_FOR_PARTITION;
                    }
                    let current_leader = hints.leader(&topic, index, r.error).map_or_else(
                        Default::default,
                        |(leader, epoch)| {
                            LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(leader))
                                .with_leader_epoch(epoch)
                        },
                    );
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(r.error)
                        .with_current_leader(current_leader)
                        .with_base_offset(r.base_offset)
                        .with_log_append_time_ms(r.log_append_time_ms)
                        .with_log_start_offset(r.log_start_offset)
                        .with_error_message(r.message.as_deref().map(sb))
                })
                .collect();
            TopicProduceResponse::default()
                .with_name(name)
                .with_topic_id(topic_id)
                .with_partition_responses(partition_responses)
        })
        .collect();
    let node_endpoints = hints
        .endpoints()
        .into_iter()
        .map(|e| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(e.node_id))
                .with_host(sb(&e.host))
                .with_port(e.port)
        })
        .collect();
    encode_response(
        ctx,
        &ProduceResponse::default()
            .with_responses(responses)
            .with_node_endpoints(node_endpoints),
    )
    .into()
}

/// The answer to every partition of a request whose acks is not -1, 0 or 1.
fn refused_acks(durability: Option<Durability>, acks: i16) -> Option<PartitionResult> {
    durability.is_none().then(|| {
        PartitionResult::error(
            code::INVALID_REQUIRED_ACKS,
            format!("acks must be -1, 0 or 1, got {acks}"),
        )
    })
}

/// What can be checked where the request arrived: acks, the partition's owner, the internal
/// topic, and every batch (length, magic, CRC). `Ok`: the owner and the batches to append.
fn check_partition(
    shard: &Shard,
    name: &str,
    pd: PartitionProduceData,
    durability: Option<Durability>,
    acks: i16,
) -> Result<(usize, PartitionAppend), PartitionResult> {
    if let Some(refused) = refused_acks(durability, acks) {
        return Err(refused);
    }
    let Some(owner) = shard.cluster.owner(name, pd.index) else {
        return Err(PartitionResult::error(
            code::UNKNOWN_TOPIC_OR_PARTITION,
            None,
        ));
    };
    if name == crate::OFFSETS_TOPIC {
        // Only the coordinators write it (Kafka refuses the same way): a client's batch there
        // would be replayed as commits at every start.
        return Err(PartitionResult::error(
            code::INVALID_TOPIC_EXCEPTION,
            format!("cannot append to the internal topic {name}"),
        ));
    }
    let records = pd.records.unwrap_or_default();
    let batches = match batch::split(&records) {
        Ok(b) => b,
        Err(e) => {
            spate_engine::warn_limited!("produce: bad batch", topic = %name, partition = pd.index, "produce refused: {e}");
            let code = match e {
                batch::BatchError::Crc { .. } | batch::BatchError::Truncated { .. } => {
                    code::CORRUPT_MESSAGE
                }
                batch::BatchError::Magic { .. } => code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
                _ => code::INVALID_RECORD,
            };
            return Err(PartitionResult::error(code, e.to_string()));
        }
    };
    // The topic's configs: size limit, timestamps, compression, LogAppendTime.
    let settings = shard
        .cluster
        .topic_settings(name)
        .unwrap_or_else(|| shard.cluster.settings_of(&Default::default()));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let applied = produce_policy::apply(
        &settings,
        batches,
        now_ms,
        spate_client::MAX_DECOMPRESSED_BATCH,
    )
    .map_err(|(code, msg)| {
        spate_engine::warn_limited!("produce: refused by topic config", topic = %name, partition = pd.index, "produce refused: {msg}");
        PartitionResult::error(code, msg)
    })?;
    Ok((
        owner,
        PartitionAppend {
            topic: name.to_string(),
            partition: pd.index as u32,
            batches: applied.batches,
            log_append_time_ms: applied.log_append_time_ms,
            timeout_ms: 30_000,
        },
    ))
}

/// On the owner shard: appends every partition of one request that this shard owns, all at
/// once. `queued` goes home once each partition's batches are queued (or refused).
async fn append_on_owner(
    s: Rc<Shard>,
    parts: Vec<PartitionAppend>,
    durability: Durability,
    queued: HomeSender<()>,
) -> Vec<PartitionResult> {
    let mut parts_queued = Vec::with_capacity(parts.len());
    let appends: Vec<_> = parts
        .into_iter()
        .map(|p| {
            let (part_queued, part_queued_rx) = oneshot::channel();
            parts_queued.push(part_queued_rx);
            let log_append_time_ms = p.log_append_time_ms;
            let s = s.clone();
            async move {
                let mut r = append_here(
                    s,
                    p.topic,
                    p.partition,
                    p.batches,
                    durability,
                    p.timeout_ms,
                    part_queued,
                )
                .await;
                if r.error == code::NONE {
                    r.log_append_time_ms = log_append_time_ms;
                }
                r
            }
        })
        .collect();
    let all_queued = async move {
        // A dropped sender (refused, or an idempotent batch stored) counts as queued.
        join_all(parts_queued).await;
        queued.send(());
    };
    let (results, ()) = futures_util::future::join(join_all(appends), all_queued).await;
    results
}

/// Appends checked batches to a partition of this shard, deduplicating idempotent retries.
/// `queued` fires when the batches are queued in the log; for an idempotent producer only
/// when they are stored (its next batch is checked against this one's sequence).
async fn append_here(
    s: Rc<Shard>,
    topic: String,
    partition: u32,
    batches: Vec<Batch>,
    durability: Durability,
    timeout_ms: u64,
    queued: oneshot::Sender<()>,
) -> PartitionResult {
    // In a cluster: only the leader appends, in its leader epoch; acks=all on a replicated
    // partition needs min.insync.replicas in the ISR first, and the high watermark after.
    let (leader_epoch, replicated) = match s.replicas.as_ref().map(|r| r.leading(&topic, partition))
    {
        None => (crate::LEADER_EPOCH, false),
        Some(Leading::Yes {
            leader_epoch,
            replicated,
        }) => (leader_epoch, replicated),
        Some(Leading::No { leader, .. }) => {
            return PartitionResult::error(
                code::NOT_LEADER_OR_FOLLOWER,
                format!(
                "this broker does not lead the partition (its leader is {}); refresh the metadata",
                leader.map_or("not known".to_string(), |l| format!("broker {l}"))
            ),
            )
        }
        Some(Leading::Unknown) => {
            return PartitionResult::error(
                code::NOT_LEADER_OR_FOLLOWER,
                "this broker holds no replica of the partition; refresh the metadata".to_string(),
            )
        }
    };
    let acks_all = replicated && durability == Durability::Durable;
    if acks_all {
        if let Some(Err(e)) = s
            .replicas
            .as_ref()
            .map(|r| r.check_acks_all(&topic, partition))
        {
            spate_engine::warn_limited!("produce refused: not enough replicas", topic = %topic, partition, "acks=all refused: {}", e.message);
            return PartitionResult::error(e.code, e.message);
        }
    }
    let r = append_local(
        &s,
        &topic,
        partition,
        batches,
        durability,
        leader_epoch,
        queued,
    )
    .await;
    if !acks_all || r.error != code::NONE {
        return r.result;
    }
    let (Some(replicas), Some(end)) = (s.replicas.as_ref(), r.ack_end) else {
        return r.result;
    };
    replicas.on_leader_progress(&topic, partition);
    let wait = replicas.wait_acks_all(&topic, partition, leader_epoch, end);
    let timer = glommio::timer::sleep(std::time::Duration::from_millis(timeout_ms));
    match futures_util::future::select(Box::pin(wait), Box::pin(timer)).await {
        futures_util::future::Either::Left((Ok(()), _)) => r.result,
        futures_util::future::Either::Left((Err(e), _)) => {
            spate_engine::warn_limited!("produce: replicas failed", topic = %topic, partition, "acks=all not acknowledged: {}", e.message);
            PartitionResult::error(e.code, e.message)
        }
        futures_util::future::Either::Right(_) => PartitionResult::error(
            code::REQUEST_TIMED_OUT,
            format!("the in-sync replicas did not confirm the write within the request's timeout of {timeout_ms} ms"),
        ),
    }
}

/// A local append's answer, and the offset acks=all waits to see below the high watermark.
struct Appended {
    result: PartitionResult,
    ack_end: Option<u64>,
    error: i16,
}

impl From<PartitionResult> for Appended {
    fn from(result: PartitionResult) -> Self {
        Appended {
            error: result.error,
            result,
            ack_end: None,
        }
    }
}

/// Appends to this shard's log of the partition (deduplicating idempotent retries).
async fn append_local(
    s: &Rc<Shard>,
    topic: &str,
    partition: u32,
    batches: Vec<Batch>,
    durability: Durability,
    leader_epoch: i32,
    queued: oneshot::Sender<()>,
) -> Appended {
    let Some(log) = s.logs.get(topic, partition) else {
        return PartitionResult::error(code::UNKNOWN_TOPIC_OR_PARTITION, None).into();
    };
    let idempotent = batches.iter().any(|b| b.header.is_idempotent());
    if idempotent {
        s.producers.ensure_loaded(topic, partition, &log).await;
        let verdicts: Vec<Verdict> = batches
            .iter()
            .map(|b| s.producers.check(topic, partition, &b.header))
            .collect();
        if let Some(Verdict::Duplicate { base_offset }) = verdicts.first() {
            if verdicts
                .iter()
                .all(|v| matches!(v, Verdict::Duplicate { .. }))
            {
                tracing::debug!(topic = %topic, partition, base_offset, "duplicate batch from an idempotent producer: not stored again");
                // A retried acks=all batch is acknowledged once its first copy is below the
                // high watermark, as the first would have been.
                let count: u64 = batches
                    .iter()
                    .map(|b| u64::from(b.header.offset_count()))
                    .sum();
                return Appended {
                    error: code::NONE,
                    ack_end: Some(*base_offset as u64 + count),
                    result: PartitionResult {
                        error: code::NONE,
                        base_offset: *base_offset,
                        log_start_offset: log.offsets().log_start as i64,
                        log_append_time_ms: -1,
                        message: None,
                    },
                };
            }
        }
        for v in &verdicts {
            match v {
                Verdict::Append => {}
                Verdict::StaleEpoch => {
                    return PartitionResult::error(
                        code::INVALID_PRODUCER_EPOCH,
                        "producer epoch is older than one already seen".to_string(),
                    )
                    .into()
                }
                Verdict::OutOfOrder { expected } => {
                    return PartitionResult::error(
                        code::OUT_OF_ORDER_SEQUENCE_NUMBER,
                        format!("expected sequence {expected}"),
                    )
                    .into()
                }
                Verdict::Duplicate { .. } => {
                    return PartitionResult::error(
                        code::OUT_OF_ORDER_SEQUENCE_NUMBER,
                        "a request mixes retried and new batches".to_string(),
                    )
                    .into()
                }
            }
        }
    }
    let headers: Vec<_> = batches.iter().map(|b| b.header).collect();
    let records: i64 = headers.iter().map(|h| i64::from(h.offset_count())).sum();
    let durability = s.flush_policy_durability(topic, partition, records, durability);
    let appends = batches
        .into_iter()
        .map(|b| AppendBatch {
            record_count: b.header.offset_count(),
            // Every record of a LogAppendTime batch has the append time (its max timestamp).
            first_timestamp_ms: if produce_policy::is_log_append_time(&b.header) {
                b.header.max_timestamp
            } else {
                b.header.first_timestamp
            },
            max_timestamp_ms: b.header.max_timestamp,
            leader_epoch,
            base_offset_field: Some(0),
            payload: b.bytes,
        })
        .collect();
    let appended = match log.enqueue(appends, durability).await {
        Ok(appending) => {
            if !idempotent {
                let _ = queued.send(());
            }
            appending.wait().await
        }
        Err(e) => Err(e),
    };
    match appended {
        Ok(r) => {
            if idempotent {
                let mut base = r.base_offset as i64;
                for h in &headers {
                    if h.is_idempotent() {
                        s.producers.stored(topic, partition, h, base);
                    }
                    base += i64::from(h.offset_count());
                }
            }
            Appended {
                error: code::NONE,
                ack_end: Some(r.last_offset + 1),
                result: PartitionResult {
                    error: code::NONE,
                    base_offset: r.base_offset as i64,
                    log_start_offset: log.offsets().log_start as i64,
                    log_append_time_ms: -1,
                    message: None,
                },
            }
        }
        Err(e) => {
            // Answered KAFKA_STORAGE_ERROR, which clients retry (Java's KafkaStorageException is
            // a RetriableException; librdkafka retries it, its test 0117-mock_errors): a full
            // disk pauses producers until space is freed, it does not fail their sends.
            let cause = if e.is_disk_full() {
                "produce refused: disk full"
            } else {
                "produce refused: append failed"
            };
            spate_engine::warn_limited!(cause, topic = %topic, partition, "append refused: {e}");
            PartitionResult::error(engine_code(&e), e.to_string()).into()
        }
    }
}

pub async fn init_producer_id(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    if req.transactional_id.is_some() {
        // Transactions are not implemented: say so rather than pretend.
        return InitProducerIdResponse::default()
            .with_error_code(code::TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    // A producer asking to bump its epoch keeps its id with the next epoch.
    if req.producer_id.0 >= 0 && req.producer_epoch >= 0 && req.producer_epoch < i16::MAX {
        return InitProducerIdResponse::default()
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
    }
    match shard.allocate_producer_id().await {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            spate_engine::warn_limited!(
                "producer id refused",
                "cannot allocate a producer id: {}",
                e.message
            );
            InitProducerIdResponse::default()
                .with_error_code(e.code)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
        }
    }
}
