//! Admin APIs: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs, AlterConfigs,
//! IncrementalAlterConfigs and DeleteRecords. Topic changes run on shard 0, which owns the
//! metadata file; settings reach the partitions' owners before the answer.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use crate::metadata::{validate_topic_name, TopicConfigs};
use crate::topic_configs::{self, AlterOp, ConfigChange, TOPIC_CONFIGS};
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
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

/// A topic's overrides from the (name, value) pairs of CreateTopics, checked as a whole.
fn creation_configs(
    shard: &Shard,
    pairs: &[(String, Option<String>)],
) -> Result<TopicConfigs, String> {
    let changes: Vec<ConfigChange> = pairs
        .iter()
        .map(|(name, value)| ConfigChange {
            name: name.clone(),
            op: AlterOp::Set,
            value: value.clone(),
        })
        .collect();
    topic_configs::apply_changes(
        &TopicConfigs::default(),
        &changes,
        true,
        &shard.cluster.broker_defaults,
    )
}

/// Every config of a topic as DescribeConfigs and CreateTopics (v5+) answer them.
fn topic_described(
    shard: &Shard,
    topic: &str,
    configs: &TopicConfigs,
    synonyms: bool,
    documentation: bool,
) -> Vec<DescribeConfigsResourceResult> {
    use kafka_protocol::messages::describe_configs_response::DescribeConfigsSynonym;
    TOPIC_CONFIGS
        .iter()
        .map(|def| {
            let mut r = topic_configs::resolve(def, configs, &shard.cluster.broker_defaults);
            let mut read_only = def.read_only;
            if topic == OFFSETS_TOPIC && def.name == "cleanup.policy" {
                // Compacted, never cut by retention, whatever is stored.
                r.value = "compact".into();
                read_only = true;
            }
            let entry = DescribeConfigsResourceResult::default()
                .with_name(sb(def.name))
                .with_value(Some(sb(&r.value)))
                .with_read_only(read_only)
                .with_config_source(r.source)
                .with_is_sensitive(false)
                .with_config_type(def.ty.code());
            let entry = if synonyms {
                entry.with_synonyms(
                    r.synonyms
                        .iter()
                        .map(|(name, value, source)| {
                            DescribeConfigsSynonym::default()
                                .with_name(sb(name))
                                .with_value(Some(sb(value)))
                                .with_source(*source)
                        })
                        .collect(),
                )
            } else {
                entry
            };
            // Null unless asked for, as Kafka answers (the message's default is "").
            entry.with_documentation(documentation.then(|| sb(def.doc)))
        })
        .collect()
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
        let clustered = shard.cluster.node_handle().is_some();
        let partitions = if t.num_partitions == -1 && clustered && !t.assignments.is_empty() {
            t.assignments.len() as u32
        } else if t.num_partitions == -1 {
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
        if t.replication_factor > 1 && !clustered {
            results.push(result(
                code::INVALID_REPLICATION_FACTOR,
                Some(format!(
                    "replication factor {} is more than the 1 broker of this cluster",
                    t.replication_factor
                )),
            ));
            continue;
        }
        if !t.assignments.is_empty() && !clustered {
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
        let pairs: Vec<(String, Option<String>)> = t
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.as_str().to_string(),
                    c.value.as_ref().map(|v| v.as_str().to_string()),
                )
            })
            .collect();
        let config = match creation_configs(shard, &pairs) {
            Ok(c) => c,
            Err(msg) => {
                spate_engine::warn_limited!("admin refused: config", topic = %name, "CreateTopics refused: {msg}");
                results.push(result(code::INVALID_CONFIG, Some(msg)));
                continue;
            }
        };
        let described = |c: &TopicConfigs| -> Vec<CreatableTopicConfigs> {
            topic_described(shard, &name, c, false, false)
                .into_iter()
                .map(|d| {
                    CreatableTopicConfigs::default()
                        .with_name(d.name)
                        .with_value(d.value)
                        .with_read_only(d.read_only)
                        .with_config_source(d.config_source)
                        .with_is_sensitive(d.is_sensitive)
                })
                .collect()
        };
        if clustered {
            let rf = if t.replication_factor == -1 {
                shard.cluster.config.default_replication_factor as i32
            } else {
                i32::from(t.replication_factor)
            };
            let assignment = (!t.assignments.is_empty()).then(|| {
                let mut lists: Vec<_> = t
                    .assignments
                    .iter()
                    .map(|a| {
                        (
                            a.partition_index,
                            a.broker_ids.iter().map(|b| b.0).collect(),
                        )
                    })
                    .collect();
                lists.sort_by_key(|(p, _)| *p);
                lists.into_iter().map(|(_, l)| l).collect::<Vec<Vec<i32>>>()
            });
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
                        .with_replication_factor(rf as i16)
                        .with_configs(Some(described(&config)))
                });
                continue;
            }
            let configs = described(&config);
            let created = shard
                .create_topic_in_cluster(name.clone(), partitions as i32, rf, assignment, &config)
                .await;
            results.push(match created {
                Ok(topic_id) => {
                    let (count, factor) = shard
                        .cluster
                        .cluster_view()
                        .and_then(|v| {
                            v.image.topics.get(&topic_id).map(|t| {
                                (
                                    t.partitions.len() as i32,
                                    t.partitions
                                        .first()
                                        .map_or(rf, |p| p.assignment.replicas.len() as i32),
                                )
                            })
                        })
                        .unwrap_or((partitions as i32, rf));
                    result(code::NONE, None)
                        .with_topic_id(uuid::Uuid::from_bytes(topic_id))
                        .with_num_partitions(count)
                        .with_replication_factor(factor as i16)
                        .with_configs(Some(configs))
                }
                Err(e) => {
                    spate_engine::warn_limited!("admin refused", topic = %name, "CreateTopics refused: {}", e.message);
                    result(e.code, Some(e.message))
                }
            });
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
                    .with_configs(Some(described(&config)))
            });
            continue;
        }
        let configs = described(&config);
        match shard.create_topic(name.clone(), partitions, config).await {
            Ok(topic) => results.push(
                result(code::NONE, None)
                    .with_topic_id(uuid::Uuid::from_bytes(topic.topic_id))
                    .with_num_partitions(partitions as i32)
                    .with_replication_factor(1)
                    .with_configs(Some(configs)),
            ),
            Err(e) => {
                log_refused("CreateTopics", &name, &e);
                results.push(result(engine_code(&e), Some(e.to_string())))
            }
        }
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// A topic as DeleteTopics names it: by name (v1-v5, and v6 with the zero id) or by id (v6,
/// with a null name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum TopicRef {
    Name(String),
    Id([u8; 16]),
}

fn deletable_result(
    name: Option<&str>,
    topic_id: [u8; 16],
    error: i16,
    message: Option<&str>,
) -> DeletableTopicResult {
    DeletableTopicResult::default()
        .with_name(name.map(topic_name))
        .with_topic_id(uuid::Uuid::from_bytes(topic_id))
        .with_error_code(error)
        .with_error_message(message.map(sb))
}

/// DeleteTopics, with Kafka's (KRaft) rules for what a request may name: v6 names each topic
/// by name or by id, not both (INVALID_REQUEST) and not neither (INVALID_REQUEST); a name or
/// id given twice, or a name and the id it maps to, is INVALID_REQUEST and nothing is deleted
/// for it; an unknown id is UNKNOWN_TOPIC_ID, an unknown name UNKNOWN_TOPIC_OR_PARTITION. Every
/// answer for a topic that exists carries its name and id (v6 writes the id). Answers come in
/// this order: refusals of an entry's shape, duplicates, unknown ids, then the deletions in
/// request order (Kafka shuffles them; clients match answers by name or id). From v1 to v5 the
/// same rules apply to the list of names. The deletion itself goes by name: were a topic
/// deleted and created again under its name between the id's lookup here and the deletion on
/// shard 0, the new topic would be deleted.
pub async fn delete_topics(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    req: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    const NO_ID: [u8; 16] = [0; 16];
    let mut out = Vec::new();
    let mut given: Vec<TopicRef> = Vec::new();
    if ctx.version >= 6 {
        for t in &req.topics {
            let id = *t.topic_id.as_bytes();
            match (&t.name, id == NO_ID) {
                (None, true) => out.push(deletable_result(
                    None,
                    NO_ID,
                    code::INVALID_REQUEST,
                    Some("Neither topic name nor id were specified."),
                )),
                (Some(n), false) => out.push(deletable_result(
                    Some(n.0.as_str()),
                    id,
                    code::INVALID_REQUEST,
                    Some("You may not specify both topic name and topic id."),
                )),
                (Some(n), true) => given.push(TopicRef::Name(n.0.as_str().to_string())),
                (None, false) => given.push(TopicRef::Id(id)),
            }
        }
    } else {
        given.extend(
            req.topic_names
                .iter()
                .map(|n| TopicRef::Name(n.0.as_str().to_string())),
        );
    }
    // A topic named twice the same way is refused once and not deleted.
    let mut seen = BTreeMap::<&TopicRef, usize>::new();
    for r in &given {
        *seen.entry(r).or_default() += 1;
    }
    let mut unique: Vec<&TopicRef> = Vec::new();
    let mut refused_twice = BTreeSet::new();
    for r in &given {
        if seen[r] == 1 {
            unique.push(r);
        } else if refused_twice.insert(r) {
            out.push(match r {
                TopicRef::Name(n) => deletable_result(
                    Some(n),
                    NO_ID,
                    code::INVALID_REQUEST,
                    Some("Duplicate topic name."),
                ),
                TopicRef::Id(id) => deletable_result(
                    None,
                    *id,
                    code::INVALID_REQUEST,
                    Some("Duplicate topic id."),
                ),
            });
        }
    }
    // Each reference to (name, id). A name is looked up again by the deletion itself, which
    // says UNKNOWN_TOPIC_OR_PARTITION if it has gone meanwhile.
    let mut resolved: Vec<(String, [u8; 16], bool)> = Vec::new();
    for r in unique {
        match r {
            TopicRef::Id(id) => match shard.cluster.topic_name_of(id) {
                Some(name) => resolved.push((name, *id, true)),
                None => out.push(deletable_result(
                    None,
                    *id,
                    code::UNKNOWN_TOPIC_ID,
                    Some("no topic has this id"),
                )),
            },
            TopicRef::Name(n) => {
                let id = shard.cluster.topic_id_of(n).unwrap_or(NO_ID);
                resolved.push((n.clone(), id, false));
            }
        }
    }
    // A name that maps to an id given too: neither is deleted (Kafka's answer names the name).
    let ids_given: BTreeSet<[u8; 16]> = resolved
        .iter()
        .filter(|(_, _, by_id)| *by_id)
        .map(|(_, id, _)| *id)
        .collect();
    let clashing: BTreeSet<[u8; 16]> = resolved
        .iter()
        .filter(|(_, id, by_id)| !by_id && *id != NO_ID && ids_given.contains(id))
        .map(|(_, id, _)| *id)
        .collect();
    for (name, id, by_id) in resolved {
        if clashing.contains(&id) {
            if !by_id {
                out.push(deletable_result(
                    Some(&name),
                    id,
                    code::INVALID_REQUEST,
                    Some("The provided topic name maps to an ID that was already supplied."),
                ));
            }
            continue;
        }
        let (error, msg) = if name == OFFSETS_TOPIC {
            (
                code::POLICY_VIOLATION,
                Some("the internal offsets topic cannot be deleted".to_string()),
            )
        } else if shard.cluster.node_handle().is_some() {
            match shard.delete_topic_in_cluster(name.clone()).await {
                Ok(()) => (code::NONE, None),
                Err(e) => {
                    spate_engine::warn_limited!("admin refused", topic = %name, "DeleteTopics refused: {}", e.message);
                    (e.code, Some(e.message))
                }
            }
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
        out.push(deletable_result(Some(&name), id, error, msg.as_deref()));
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
        } else if shard.cluster.node_handle().is_some() {
            if name == OFFSETS_TOPIC {
                // A group's partition is its hash modulo the count: more partitions would
                // move groups away from their committed offsets.
                (
                    code::INVALID_PARTITIONS,
                    Some(format!(
                        "the partition count of {OFFSETS_TOPIC} is fixed: each group's offsets are in the partition its id hashes to"
                    )),
                )
            } else {
                let assignment = t.assignments.as_ref().map(|lists| {
                    lists
                        .iter()
                        .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                        .collect()
                });
                match shard
                    .add_partitions_in_cluster(name.clone(), t.count, assignment)
                    .await
                {
                    Ok(()) => (code::NONE, None),
                    Err(e) => {
                        spate_engine::warn_limited!("admin refused: partitions", topic = %name, "CreatePartitions refused by the controller: {}", e.message);
                        (e.code, Some(e.message))
                    }
                }
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

/// The broker resource: the settings of Spate's broker config that Kafka has too, by their
/// Kafka names; STATIC_BROKER_CONFIG where the config file set them. Read-only: they change
/// by editing the file and restarting.
fn broker_described(
    shard: &Shard,
    synonyms: bool,
    documentation: bool,
) -> Vec<DescribeConfigsResourceResult> {
    use kafka_protocol::messages::describe_configs_response::DescribeConfigsSynonym;
    let b = &shard.cluster.broker_defaults;
    let c = &shard.cluster.config;
    let mut entries: Vec<(&str, String, i8)> = b
        .broker_entries()
        .into_iter()
        .map(|(k, v)| (k, v, 5))
        .collect();
    entries.extend([
        ("num.partitions", c.default_partitions.to_string(), 3),
        ("default.replication.factor", "1".to_string(), 3),
        (
            "auto.create.topics.enable",
            c.auto_create_topics.to_string(),
            1,
        ),
        (
            "socket.request.max.bytes",
            c.max_request_bytes.to_string(),
            3,
        ),
        ("fetch.max.bytes", c.fetch_max_bytes.to_string(), 3),
        (
            "offsets.topic.num.partitions",
            c.offsets_topic_partitions.to_string(),
            3,
        ),
    ]);
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
        .into_iter()
        .map(|(k, v, ty)| {
            // default.replication.factor is fixed (one broker), not a setting of the file.
            let source = if b.set_in_file.contains(k) {
                topic_configs::source::STATIC_BROKER_CONFIG
            } else {
                topic_configs::source::DEFAULT_CONFIG
            };
            let topic_def = topic_configs::TOPIC_CONFIGS
                .iter()
                .find(|d| d.broker_key == Some(k));
            let ty = match topic_def {
                Some(d) if ty == 5 => d.ty.code(),
                _ => ty,
            };
            // The documentation of the topic config this broker key is the default of.
            let doc = topic_def.filter(|_| documentation).map(|d| sb(d.doc));
            let entry = DescribeConfigsResourceResult::default()
                .with_name(sb(k))
                .with_value(Some(sb(&v)))
                .with_read_only(true)
                .with_config_source(source)
                .with_config_type(ty)
                .with_documentation(doc);
            if synonyms {
                entry.with_synonyms(vec![DescribeConfigsSynonym::default()
                    .with_name(sb(k))
                    .with_value(Some(sb(&v)))
                    .with_source(source)])
            } else {
                entry
            }
        })
        .collect()
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
        let entries = match r.resource_type {
            RESOURCE_TOPIC => match shard.cluster.topic(&name) {
                None => {
                    out.push(
                        result
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_error_message(Some(sb(&format!("unknown topic {name}")))),
                    );
                    continue;
                }
                Some(t) => topic_described(
                    shard,
                    &name,
                    &t.config,
                    req.include_synonyms,
                    req.include_documentation,
                ),
            },
            RESOURCE_BROKER => {
                broker_described(shard, req.include_synonyms, req.include_documentation)
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
            .filter(|e| {
                wanted
                    .is_none_or(|w| w.is_empty() || w.iter().any(|x| x.as_str() == e.name.as_str()))
            })
            .collect();
        out.push(result.with_configs(configs));
    }
    DescribeConfigsResponse::default().with_results(out)
}

/// Applies changes to a topic: all of them or, if one is refused, none.
async fn alter_topic(
    shard: &Rc<Shard>,
    name: &str,
    changes: Vec<ConfigChange>,
    replace: bool,
    validate_only: bool,
) -> (i16, Option<String>) {
    let Some(topic) = shard.cluster.topic(name) else {
        return (
            code::UNKNOWN_TOPIC_OR_PARTITION,
            Some(format!("unknown topic {name}")),
        );
    };
    // In a cluster the metadata log holds the configs: the change applies to the latest this
    // broker has applied (its local copy may be a moment behind).
    let view = shard.cluster.cluster_view();
    let current = match view.as_ref().and_then(|v| v.image.topic_by_name(name)) {
        Some(t) => TopicConfigs::from_pairs(t.configs.iter().map(|(k, v)| (k.as_str(), v.clone()))),
        None => topic.config.clone(),
    };
    let config = match topic_configs::apply_changes(
        &current,
        &changes,
        replace,
        &shard.cluster.broker_defaults,
    ) {
        Ok(c) => c,
        Err(msg) => {
            spate_engine::warn_limited!("admin refused: config", topic = %name, "AlterConfigs refused: {msg}");
            return (code::INVALID_CONFIG, Some(msg));
        }
    };
    if name == OFFSETS_TOPIC {
        // Described read-only: the broker compacts it itself, and retention (cleanup.policy
        // with delete, or an AlterConfigs that leaves cleanup.policy out and so resets it to
        // delete) would delete committed offsets.
        let s = topic_configs::TopicSettings::new(&config, &shard.cluster.broker_defaults);
        if s.delete || !s.compact {
            let msg = format!(
                "cleanup.policy is read-only on {OFFSETS_TOPIC}: the broker compacts it itself and retention must never delete committed offsets; allowed: compact"
            );
            spate_engine::warn_limited!("admin refused: config", topic = %name, "AlterConfigs refused: {msg}");
            return (code::INVALID_CONFIG, Some(msg));
        }
    }
    if validate_only {
        return (code::NONE, None);
    }
    if shard.cluster.node_handle().is_some() {
        // Through the controller, which records the whole set in the metadata log; every
        // broker applies it to its copy and its open logs (cluster_sync).
        return match shard
            .set_topic_config_in_cluster(name.to_string(), config)
            .await
        {
            Ok(()) => (code::NONE, None),
            Err(e) => {
                spate_engine::warn_limited!("admin refused: config", topic = %name, "AlterConfigs refused by the controller: {}", e.message);
                (e.code, Some(e.message))
            }
        };
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
    changes: Vec<ConfigChange>,
    replace: bool,
    validate_only: bool,
) -> (i16, Option<String>) {
    if resource_type != RESOURCE_TOPIC {
        let keys: Vec<&str> = changes.iter().map(|c| c.name.as_str()).collect();
        return (
            code::INVALID_REQUEST,
            Some(format!(
                "cannot change {} at run time: only topic settings can be; broker settings live in the config file (edit it and restart)",
                keys.join(", ")
            )),
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
        let changes: Result<Vec<ConfigChange>, String> = r
            .configs
            .iter()
            .map(|c| {
                Ok(ConfigChange {
                    name: c.name.as_str().to_string(),
                    op: AlterOp::from_code(c.config_operation).ok_or_else(|| {
                        format!(
                            "{}: unknown operation {} (0 SET, 1 DELETE, 2 APPEND, 3 SUBTRACT)",
                            c.name.as_str(),
                            c.config_operation
                        )
                    })?,
                    value: c.value.as_ref().map(|v| v.as_str().to_string()),
                })
            })
            .collect();
        let changes = match changes {
            Ok(c) => c,
            Err(msg) => {
                out.push(
                    AlterConfigsResourceResponse::default()
                        .with_resource_type(r.resource_type)
                        .with_resource_name(r.resource_name)
                        .with_error_code(code::INVALID_REQUEST)
                        .with_error_message(Some(sb(&msg))),
                );
                continue;
            }
        };
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
            .map(|c| ConfigChange {
                name: c.name.as_str().to_string(),
                op: AlterOp::Set,
                value: c.value.as_ref().map(|v| v.as_str().to_string()),
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
    // In a cluster only the leader deletes; its followers follow its log start.
    if let Err(code) = s.leader_epoch_here(&topic, partition) {
        return (code, -1);
    }
    // -1: up to the high watermark.
    let target = if offset == -1 {
        log.offsets().high_watermark
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
