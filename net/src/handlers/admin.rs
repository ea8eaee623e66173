//! Admin APIs: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs and DeleteRecords. Topic changes run on shard 0, which owns the
//! metadata file; settings reach the partitions' owners before the answer.

use std::rc::Rc;

use crate::metadata::{validate_topic_name, TopicConfig};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::*;
use spate_engine::EngineError;

use super::{code, engine_code, sb, topic_name, Ctx};

/// Logs an admin request refused for an engine error, at a bounded rate per cause: every
/// error answered to a client says why in the log too (a full disk first of all).
fn log_refused(what: &'static str, name: &str, e: &EngineError) {
    if e.is_disk_full() {
        spate_engine::warn_limited!("admin refused: disk full", topic = %name, "{what} refused: {e}");
    } else {
        spate_engine::warn_limited!("admin refused", topic = %name, "{what} refused: {e}");
    }
}
use crate::{Shard, OFFSETS_TOPIC};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Topic settings Spate knows, by their Kafka names.
const TOPIC_KEYS: &[&str] = &[
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
];

fn set_key(c: &mut TopicConfig, key: &str, value: Option<&str>) -> Result<(), String> {
    let parse_i64 = |v: Option<&str>| -> Result<Option<i64>, String> {
        match v {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("{key} must be an integer, got {v:?}")),
        }
    };
    let nonneg = |v: Option<i64>| -> Result<Option<u64>, String> {
        v.map(|x| u64::try_from(x).map_err(|_| format!("{key} must not be negative")))
            .transpose()
    };
    match key {
        "retention.bytes" => c.retention_bytes = parse_i64(value)?,
        "retention.ms" => c.retention_ms = parse_i64(value)?,
        "segment.bytes" => c.segment_bytes = nonneg(parse_i64(value)?)?,
        "segment.ms" => c.segment_ms = nonneg(parse_i64(value)?)?,
        other => {
            return Err(format!(
                "unknown or unsupported topic config {other:?}; supported: {}",
                TOPIC_KEYS.join(", ")
            ))
        }
    }
    Ok(())
}

/// Checks a topic config against the engine's limits.
fn check_config(shard: &Shard, c: &TopicConfig) -> Result<(), String> {
    c.apply(&shard.cluster.log_defaults).validate()
}

pub async fn create_topics(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: CreateTopicsRequest,
) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let result = |error: i16, msg: Option<String>| {
            CreatableTopicResult::default()
                .with_name(topic_name(&name))
                .with_error_code(error)
                .with_error_message(msg.as_deref().map(sb))
        };
        let partitions = if t.num_partitions == -1 {
            shard.cluster.config.default_partitions
        } else if t.num_partitions <= 0 {
            results.push(result(
                code::INVALID_PARTITIONS,
                Some(format!(
                    "partition count must be positive, got {}",
                    t.num_partitions
                )),
            ));
            continue;
        } else {
            t.num_partitions as u32
        };
        if t.replication_factor > 1 {
            results.push(result(
                code::INVALID_REPLICATION_FACTOR,
                Some(format!(
                    "replication factor {} is more than the 1 broker of this cluster",
                    t.replication_factor
                )),
            ));
            continue;
        }
        if !t.assignments.is_empty() {
            results.push(result(
                code::INVALID_REQUEST,
                Some("manual replica assignments are not supported".into()),
            ));
            continue;
        }
        if let Err(e) = validate_topic_name(&name) {
            results.push(result(code::INVALID_TOPIC_EXCEPTION, Some(e.to_string())));
            continue;
        }
        let mut config = TopicConfig::default();
        let bad = t
            .configs
            .iter()
            .find_map(|c| {
                set_key(
                    &mut config,
                    c.name.as_str(),
                    c.value.as_ref().map(|v| v.as_str()),
                )
                .err()
            })
            .or_else(|| check_config(shard, &config).err());
        if let Some(msg) = bad {
            results.push(result(code::INVALID_CONFIG, Some(msg)));
            continue;
        }
        if req.validate_only {
            let exists = shard.cluster.topic(&name).is_some();
            results.push(if exists {
                result(
                    code::TOPIC_ALREADY_EXISTS,
                    Some(format!("topic {name} already exists")),
                )
            } else {
                result(code::NONE, None)
                    .with_num_partitions(partitions as i32)
                    .with_replication_factor(1)
            });
            continue;
        }
        match shard.create_topic(name.clone(), partitions, config).await {
            Ok(_) => results.push(
                result(code::NONE, None)
                    .with_num_partitions(partitions as i32)
                    .with_replication_factor(1),
            ),
            Err(e) => {
                log_refused("CreateTopics", &name, &e);
                results.push(result(engine_code(&e), Some(e.to_string())))
            }
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub async fn delete_topics(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let names: Vec<String> = if ctx.version >= 6 {
        req.topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str().to_string()))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| n.0.as_str().to_string())
            .collect()
    };
    let mut out = Vec::new();
    for name in names {
        let (error, msg) = if name == OFFSETS_TOPIC {
            (
                code::POLICY_VIOLATION,
                Some("the internal offsets topic cannot be deleted".to_string()),
            )
        } else {
            match shard.delete_topic(name.clone()).await {
                Ok(()) => (code::NONE, None),
                Err(e @ EngineError::UnknownPartition(_)) => {
                    (code::UNKNOWN_TOPIC_OR_PARTITION, Some(e.to_string()))
                }
                Err(e) => {
                    log_refused("DeleteTopics", &name, &e);
                    (engine_code(&e), Some(e.to_string()))
                }
            }
        };
        out.push(
            DeletableTopicResult::default()
                .with_name(Some(topic_name(&name)))
                .with_error_code(error)
                .with_error_message(msg.as_deref().map(sb)),
        );
    }
    DeleteTopicsResponse::default().with_responses(out)
}

pub async fn create_partitions(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut out = Vec::new();
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let (error, msg) = if t.count <= 0 {
            (
                code::INVALID_PARTITIONS,
                Some(format!("partition count must be positive, got {}", t.count)),
            )
        } else if req.validate_only {
            match shard.cluster.topic(&name) {
                None => (code::UNKNOWN_TOPIC_OR_PARTITION, None),
                Some(m) if m.partitions() >= t.count as u32 => (
                    code::INVALID_PARTITIONS,
                    Some(format!("topic has {} partitions already", m.partitions())),
                ),
                Some(_) => (code::NONE, None),
            }
        } else {
            match shard.add_partitions(name.clone(), t.count as u32).await {
                Ok(_) => (code::NONE, None),
                Err(e @ EngineError::UnknownPartition(_)) => {
                    (code::UNKNOWN_TOPIC_OR_PARTITION, Some(e.to_string()))
                }
                Err(e @ EngineError::InvalidTopic(_)) => {
                    (code::INVALID_PARTITIONS, Some(e.to_string()))
                }
                Err(e) => {
                    log_refused("CreatePartitions", &name, &e);
                    (engine_code(&e), Some(e.to_string()))
                }
            }
        };
        out.push(
            CreatePartitionsTopicResult::default()
                .with_name(t.name)
                .with_error_code(error)
                .with_error_message(msg.as_deref().map(sb)),
        );
    }
    CreatePartitionsResponse::default().with_results(out)
}

/// (name, value, is the topic's own setting) for every topic key.
fn topic_entries(shard: &Shard, topic: &str, c: &TopicConfig) -> Vec<(String, String, bool)> {
    let d = &shard.cluster.log_defaults;
    // `__consumer_offsets` keeps each key's last record (commit_log_compaction.rs).
    let policy = if topic == OFFSETS_TOPIC {
        "compact"
    } else {
        "delete"
    };
    vec![
        (
            "retention.bytes".into(),
            c.retention_bytes.unwrap_or(d.retention_bytes).to_string(),
            c.retention_bytes.is_some(),
        ),
        (
            "retention.ms".into(),
            c.retention_ms.unwrap_or(d.retention_ms).to_string(),
            c.retention_ms.is_some(),
        ),
        (
            "segment.bytes".into(),
            c.segment_bytes.unwrap_or(d.segment_bytes).to_string(),
            c.segment_bytes.is_some(),
        ),
        (
            "segment.ms".into(),
            c.segment_ms.unwrap_or(d.segment_ms).to_string(),
            c.segment_ms.is_some(),
        ),
        ("cleanup.policy".into(), policy.into(), false),
    ]
}

pub async fn describe_configs(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let mut out = Vec::new();
    for r in req.resources {
        let name = r.resource_name.as_str().to_string();
        let result = DescribeConfigsResult::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name.clone());
        let entries: Vec<(String, String, bool, i8, bool)> = match r.resource_type {
            RESOURCE_TOPIC => match shard.cluster.topic(&name) {
                None => {
                    out.push(
                        result
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_error_message(Some(sb(&format!("unknown topic {name}")))),
                    );
                    continue;
                }
                // Source 1: set on the topic; 5: the broker's default.
                Some(t) => topic_entries(shard, &name, &t.config)
                    .into_iter()
                    .map(|(k, v, own)| {
                        let read_only = k == "cleanup.policy";
                        (k, v, own, if own { 1 } else { 5 }, read_only)
                    })
                    .collect(),
            },
            RESOURCE_BROKER => {
                let d = &shard.cluster.log_defaults;
                [
                    ("log.retention.bytes", d.retention_bytes.to_string()),
                    ("log.retention.ms", d.retention_ms.to_string()),
                    ("log.segment.bytes", d.segment_bytes.to_string()),
                    ("log.roll.ms", d.segment_ms.to_string()),
                    (
                        "num.partitions",
                        shard.cluster.config.default_partitions.to_string(),
                    ),
                    (
                        "auto.create.topics.enable",
                        shard.cluster.config.auto_create_topics.to_string(),
                    ),
                    (
                        "message.max.bytes",
                        shard.cluster.config.max_request_bytes.to_string(),
                    ),
                    (
                        "fetch.max.bytes",
                        shard.cluster.config.fetch_max_bytes.to_string(),
                    ),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v, false, 4, true))
                .collect()
            }
            other => {
                out.push(
                    result
                        .with_error_code(code::INVALID_REQUEST)
                        .with_error_message(Some(sb(&format!(
                            "resource type {other} is not supported"
                        )))),
                );
                continue;
            }
        };
        let wanted = r.configuration_keys.as_ref();
        let configs = entries
            .into_iter()
            .filter(|(k, ..)| {
                wanted.is_none_or(|w| w.is_empty() || w.iter().any(|x| x.as_str() == k))
            })
            .map(|(k, v, _, source, read_only)| {
                DescribeConfigsResourceResult::default()
                    .with_name(sb(&k))
                    .with_value(Some(sb(&v)))
                    .with_read_only(read_only)
                    .with_config_source(source)
            })
            .collect();
        out.push(result.with_configs(configs));
    }
    DescribeConfigsResponse::default().with_results(out)
}

/// Applies (name, op, value) changes to a topic; op 0 sets, 1 deletes (back to the default).
async fn alter_topic(
    shard: &Rc<Shard>,
    name: &str,
    changes: Vec<(String, i8, Option<String>)>,
    replace: bool,
    validate_only: bool,
) -> (i16, Option<String>) {
    let Some(topic) = shard.cluster.topic(name) else {
        return (
            code::UNKNOWN_TOPIC_OR_PARTITION,
            Some(format!("unknown topic {name}")),
        );
    };
    let mut config = if replace {
        TopicConfig::default()
    } else {
        topic.config.clone()
    };
    for (key, op, value) in &changes {
        let r = match op {
            0 => set_key(&mut config, key, value.as_deref()),
            1 => set_key(&mut config, key, None),
            _ => Err(format!(
                "{key}: APPEND and SUBTRACT apply to list settings only"
            )),
        };
        if let Err(msg) = r {
            return (code::INVALID_CONFIG, Some(msg));
        }
    }
    if let Err(msg) = check_config(shard, &config) {
        return (code::INVALID_CONFIG, Some(msg));
    }
    if validate_only {
        return (code::NONE, None);
    }
    match shard.set_topic_config(name.to_string(), config).await {
        Ok(()) => {
            tracing::info!(topic = %name, "topic settings changed");
            (code::NONE, None)
        }
        Err(e) => {
            log_refused("AlterConfigs", name, &e);
            (engine_code(&e), Some(e.to_string()))
        }
    }
}

/// One resource of AlterConfigs or IncrementalAlterConfigs: only topics change at run time.
async fn alter_resource(
    shard: &Rc<Shard>,
    resource_type: i8,
    name: &str,
    changes: Vec<(String, i8, Option<String>)>,
    replace: bool,
    validate_only: bool,
) -> (i16, Option<String>) {
    if resource_type != RESOURCE_TOPIC {
        return (
            code::INVALID_REQUEST,
            Some("only topic settings can be changed at run time; broker settings live in the config file".to_string()),
        );
    }
    alter_topic(shard, name, changes, replace, validate_only).await
}

pub async fn incremental_alter_configs(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
    let mut out = Vec::new();
    for r in req.resources {
        let changes = r
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.as_str().to_string(),
                    c.config_operation,
                    c.value.as_ref().map(|v| v.as_str().to_string()),
                )
            })
            .collect();
        let (error, msg) = alter_resource(
            shard,
            r.resource_type,
            r.resource_name.as_str(),
            changes,
            false,
            req.validate_only,
        )
        .await;
        out.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(error)
                .with_error_message(msg.as_deref().map(sb)),
        );
    }
    IncrementalAlterConfigsResponse::default().with_responses(out)
}

/// AlterConfigs replaces the whole set: keys not named go back to the default.
pub async fn alter_configs(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: AlterConfigsRequest,
) -> AlterConfigsResponse {
    use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
    let mut out = Vec::new();
    for r in req.resources {
        let changes = r
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.as_str().to_string(),
                    0,
                    c.value.as_ref().map(|v| v.as_str().to_string()),
                )
            })
            .collect();
        let (error, msg) = alter_resource(
            shard,
            r.resource_type,
            r.resource_name.as_str(),
            changes,
            true,
            req.validate_only,
        )
        .await;
        out.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name)
                .with_error_code(error)
                .with_error_message(msg.as_deref().map(sb)),
        );
    }
    AlterConfigsResponse::default().with_responses(out)
}

async fn delete_records_here(
    s: Rc<Shard>,
    topic: String,
    partition: u32,
    offset: i64,
) -> (i16, i64) {
    let Some(log) = s.logs.get(&topic, partition) else {
        return (code::UNKNOWN_TOPIC_OR_PARTITION, -1);
    };
    // -1: up to the high watermark.
    let target = if offset == -1 {
        log.stats().log_end_offset
    } else if offset < 0 {
        return (code::OFFSET_OUT_OF_RANGE, -1);
    } else {
        offset as u64
    };
    match log.delete_records(target).await {
        Ok(start) => {
            tracing::info!(topic = %topic, partition, log_start = start, "records deleted");
            (code::NONE, start as i64)
        }
        Err(e) => {
            log_refused("DeleteRecords", &topic, &e);
            (engine_code(&e), -1)
        }
    }
}

/// DeleteRecords: every partition on its owner, one mesh call per owner shard.
pub async fn delete_records(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    let mut asks = Vec::new();
    // Whether each partition, in request order, has an owner (and so an answer in `answers`).
    let mut owned = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str().to_string();
        for p in &t.partitions {
            let owner = shard.cluster.owner(&name, p.partition_index);
            owned.push(owner.is_some());
            if let Some(owner) = owner {
                asks.push((owner, (name.clone(), p.partition_index as u32, p.offset)));
            }
        }
    }
    let mut answers = shard
        .mesh
        .call_each(asks, |s, (name, partition, offset)| {
            delete_records_here(s, name, partition, offset)
        })
        .await
        .into_iter();
    let mut owned = owned.into_iter();
    let mut topics = Vec::new();
    for t in req.topics {
        let parts = t
            .partitions
            .iter()
            .map(|p| {
                let (error, low) = match owned.next() {
                    Some(false) | None => (code::UNKNOWN_TOPIC_OR_PARTITION, -1),
                    Some(true) => answers
                        .next()
                        .and_then(Result::ok)
                        .unwrap_or((code::UNKNOWN_SERVER_ERROR, -1)),
                };
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(low)
                    .with_error_code(error)
            })
            .collect();
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(parts),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}
