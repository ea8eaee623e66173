//! ApiVersions, Metadata (with topic auto-creation), DescribeCluster and FindCoordinator.

use std::rc::Rc;

use crate::metadata::TopicConfigs;
use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::*;
use spate_engine::EngineError;

use super::{code, engine_code, sb, topic_name, Ctx};
use crate::codec::{self, CodecError, RequestContext, RequestPrefix, ResponseChunks};
use crate::{versions, LEADER_EPOCH, OFFSETS_TOPIC};
use spate_replication::metadata::{TopicImage, NO_LEADER};
use spate_replication::node::ClusterView;

/// ApiVersions at the version the client asked for; above v4, UNSUPPORTED_VERSION at v0
/// (which still lists the ranges, so the client retries lower).
pub fn api_versions(prefix: RequestPrefix, mut frame: Bytes) -> Result<ResponseChunks, CodecError> {
    let api_keys: Vec<ApiVersion> = versions::SUPPORTED
        .iter()
        .map(|(k, min, max)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    let supported = versions::supported(ApiKey::ApiVersions as i16)
        .is_some_and(|(_, min, max)| (min..=max).contains(&prefix.api_version));
    let version = if supported { prefix.api_version } else { 0 };
    let mut ctx = RequestContext {
        api_key: ApiKey::ApiVersions,
        version,
        correlation_id: prefix.correlation_id,
        client_id: String::new(),
    };
    let mut error = code::NONE;
    if supported {
        match codec::decode_header(ApiKey::ApiVersions, version, &mut frame) {
            Ok(c) => ctx.client_id = c.client_id,
            Err(e) => return Err(e),
        }
        // The body (client software name and version) is informational; a v3 body that
        // does not decode gets INVALID_REQUEST, as Kafka answers.
        if codec::decode_body::<ApiVersionsRequest>(&mut frame, version).is_err() {
            error = code::INVALID_REQUEST;
        }
    } else {
        error = code::UNSUPPORTED_VERSION;
    }
    let resp = ApiVersionsResponse::default()
        .with_error_code(error)
        .with_api_keys(api_keys);
    codec::encode_response(&ctx, &resp)
}

fn broker_host(shard: &crate::Shard) -> (String, i32) {
    let c = &shard.cluster.config;
    (c.advertised_host.clone(), i32::from(c.advertised_port))
}

/// The brokers to name (node id, host, port) and the controller's id: this broker alone on a
/// single node; in a cluster, every live registered broker (and this one, whose own
/// partitions it serves even before the controller has it registered).
fn brokers(shard: &crate::Shard) -> (Vec<(i32, String, i32)>, i32) {
    let (host, port) = broker_host(shard);
    let me = shard.cluster.node_id();
    let mut out = vec![(me, host, port)];
    let Some(view) = shard.cluster.cluster_view() else {
        return (out, me);
    };
    for b in view.image.live_brokers() {
        let r = &b.registration;
        if r.broker_id != me {
            out.push((
                r.broker_id,
                r.listener.host.clone(),
                i32::from(r.listener.port),
            ));
        }
    }
    out.sort_by_key(|b| b.0);
    (out, view.controller.unwrap_or(-1))
}

fn topic_entry(t: &crate::metadata::TopicMeta, node_id: i32) -> MetadataResponseTopic {
    let partitions = (0..t.partitions() as i32)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p)
                .with_leader_id(BrokerId(node_id))
                .with_leader_epoch(LEADER_EPOCH)
                .with_replica_nodes(vec![BrokerId(node_id)])
                .with_isr_nodes(vec![BrokerId(node_id)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(uuid::Uuid::from_bytes(t.topic_id))
        .with_is_internal(t.name == OFFSETS_TOPIC)
        .with_partitions(partitions)
}

/// A topic of the cluster's image as Metadata answers it: per partition its leader (none:
/// LEADER_NOT_AVAILABLE), leader epoch, replicas, ISR and the replicas on fenced brokers.
///
/// A broker that has not caught up with the metadata log since it started (its image does not
/// hold its own registration yet) names no leader: what it has may be stale, and a client
/// sent to an old leader would be told NOT_LEADER_OR_FOLLOWER anyway. LEADER_NOT_AVAILABLE
/// makes clients ask again.
fn image_topic_entry(view: &ClusterView, t: &TopicImage) -> MetadataResponseTopic {
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let leader_of = |p: &spate_replication::metadata::PartitionImage| {
        if view.registered {
            p.state.leader
        } else {
            NO_LEADER
        }
    };
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let offline: Vec<i32> = p
                .assignment
                .replicas
                .iter()
                .copied()
                .filter(|r| !view.image.is_live(*r))
                .collect();
            MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_error_code(if leader_of(p) == NO_LEADER {
                    code::LEADER_NOT_AVAILABLE
                } else {
                    code::NONE
                })
                .with_leader_id(BrokerId(leader_of(p)))
                .with_leader_epoch(p.state.leader_epoch)
                .with_replica_nodes(ids(&p.assignment.replicas))
                .with_isr_nodes(ids(&p.state.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(topic_name(&t.name)))
        .with_topic_id(uuid::Uuid::from_bytes(t.id))
        .with_is_internal(t.name == OFFSETS_TOPIC)
        .with_partitions(partitions)
}

/// Metadata of a cluster member: topics from the cluster's image; a missing one is created
/// through the controller when auto-creation allows.
async fn cluster_topics(
    shard: &Rc<crate::Shard>,
    ctx: &Ctx,
    wanted: Option<Vec<kafka_protocol::messages::metadata_request::MetadataRequestTopic>>,
    allow_auto_topic_creation: bool,
) -> Vec<MetadataResponseTopic> {
    let cluster = &shard.cluster;
    let Some(view) = cluster.cluster_view() else {
        return Vec::new();
    };
    let Some(wanted) = wanted else {
        return view
            .image
            .topics
            .values()
            .map(|t| image_topic_entry(&view, t))
            .collect();
    };
    let allow = cluster.config.auto_create_topics && (ctx.version < 4 || allow_auto_topic_creation);
    let mut out = Vec::new();
    for w in wanted {
        let Some(name) = w.name.map(|n| n.0.as_str().to_string()) else {
            let view = cluster.cluster_view().unwrap_or(view.clone());
            out.push(match view.image.topics.get(w.topic_id.as_bytes()) {
                Some(t) => image_topic_entry(&view, t),
                None => MetadataResponseTopic::default()
                    .with_topic_id(w.topic_id)
                    .with_error_code(if w.topic_id.is_nil() {
                        code::UNKNOWN_TOPIC_OR_PARTITION
                    } else {
                        code::UNKNOWN_TOPIC_ID
                    }),
            });
            continue;
        };
        let mut view = cluster.cluster_view().unwrap_or(view.clone());
        if view.image.topic_by_name(&name).is_none() && allow && name != OFFSETS_TOPIC {
            let created = shard
                .create_topic_in_cluster(
                    name.clone(),
                    cluster.config.default_partitions as i32,
                    cluster.config.default_replication_factor as i32,
                    None,
                    &TopicConfigs::default(),
                )
                .await;
            if let Err(e) = created {
                if e.code != code::TOPIC_ALREADY_EXISTS {
                    spate_engine::warn_limited!("auto-create failed", topic = %name, "auto-creation failed: {}", e.message);
                    out.push(
                        MetadataResponseTopic::default()
                            .with_name(Some(topic_name(&name)))
                            .with_error_code(if e.code == code::NOT_CONTROLLER {
                                code::LEADER_NOT_AVAILABLE
                            } else {
                                e.code
                            }),
                    );
                    continue;
                }
            }
            if let Some(v) = cluster.cluster_view() {
                view = v;
            }
        }
        out.push(match view.image.topic_by_name(&name) {
            Some(t) => image_topic_entry(&view, t),
            None => MetadataResponseTopic::default()
                .with_name(Some(topic_name(&name)))
                .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
        });
    }
    out
}

pub async fn metadata(
    shard: &Rc<crate::Shard>,
    ctx: &Ctx,
    req: MetadataRequest,
) -> MetadataResponse {
    let cluster = &shard.cluster;
    let topics = match req.topics {
        // v0: an empty list means every topic; later versions say that with null.
        None => None,
        Some(t) if t.is_empty() && ctx.version == 0 => None,
        Some(t) => Some(t),
    };
    let mut out = Vec::new();
    let topics = if cluster.node_handle().is_some() {
        out = cluster_topics(shard, ctx, topics, req.allow_auto_topic_creation).await;
        Some(Vec::new())
    } else {
        topics
    };
    match topics {
        None => {
            for t in &cluster.metadata().topics {
                out.push(topic_entry(t, cluster.node_id()));
            }
        }
        Some(wanted) => {
            // v4+ says per request whether to create; older clients expect creation.
            let allow = cluster.config.auto_create_topics
                && (ctx.version < 4 || req.allow_auto_topic_creation);
            for w in wanted {
                let Some(name) = w.name.map(|n| n.0.as_str().to_string()) else {
                    // v10+: a topic named by id only (consumer protocol members learn
                    // their assignment by topic id).
                    let by_id = (!w.topic_id.is_nil())
                        .then(|| {
                            cluster
                                .metadata()
                                .topics
                                .iter()
                                .find(|t| t.topic_id == *w.topic_id.as_bytes())
                                .map(|t| topic_entry(t, cluster.node_id()))
                        })
                        .flatten();
                    out.push(by_id.unwrap_or_else(|| {
                        let error = if w.topic_id.is_nil() {
                            code::UNKNOWN_TOPIC_OR_PARTITION
                        } else {
                            code::UNKNOWN_TOPIC_ID
                        };
                        MetadataResponseTopic::default()
                            .with_topic_id(w.topic_id)
                            .with_error_code(error)
                    }));
                    continue;
                };
                let mut found = cluster.topic(&name);
                if found.is_none() && allow && name != OFFSETS_TOPIC {
                    match shard
                        .create_topic(
                            name.clone(),
                            cluster.config.default_partitions,
                            TopicConfigs::default(),
                        )
                        .await
                    {
                        Ok(t) => found = Some(t),
                        Err(EngineError::TopicExists(_)) => found = cluster.topic(&name),
                        Err(e) => {
                            // A client asks again and again (a full disk refuses every try):
                            // one line per cause and window, not one per request.
                            let cause = if e.is_disk_full() {
                                "auto-create refused: disk full"
                            } else {
                                "auto-create failed"
                            };
                            spate_engine::warn_limited!(cause, topic = %name, "auto-creation failed: {e}");
                            out.push(
                                MetadataResponseTopic::default()
                                    .with_name(Some(topic_name(&name)))
                                    .with_error_code(engine_code(&e)),
                            );
                            continue;
                        }
                    }
                }
                match found {
                    Some(t) => out.push(topic_entry(&t, cluster.node_id())),
                    None => out.push(
                        MetadataResponseTopic::default()
                            .with_name(Some(topic_name(&name)))
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
                    ),
                }
            }
        }
    }
    let (brokers, controller) = brokers(shard);
    MetadataResponse::default()
        .with_brokers(
            brokers
                .into_iter()
                .map(|(id, host, port)| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(id))
                        .with_host(sb(&host))
                        .with_port(port)
                })
                .collect(),
        )
        .with_cluster_id(Some(sb(&cluster.cluster_id)))
        .with_controller_id(BrokerId(controller))
        .with_topics(out)
}

pub async fn describe_cluster(
    shard: &Rc<crate::Shard>,
    _ctx: &Ctx,
    _req: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let (brokers, controller) = brokers(shard);
    DescribeClusterResponse::default()
        .with_cluster_id(sb(&shard.cluster.cluster_id))
        .with_controller_id(BrokerId(controller))
        .with_endpoint_type(1)
        .with_brokers(
            brokers
                .into_iter()
                .map(|(id, host, port)| {
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(id))
                        .with_host(sb(&host))
                        .with_port(port)
                })
                .collect(),
        )
}

/// Where a group's coordinator is: (node id, host, port), or the error to answer. On a single
/// broker, this broker. In a cluster, the leader of the group's `__consumer_offsets`
/// partition, which is created through the controller (`offsets.topic.replication.factor`:
/// as many replicas as there are live brokers, up to 3) the first time a group asks.
async fn coordinator_of(shard: &Rc<crate::Shard>, group: &str) -> Result<(i32, String, i32), i16> {
    let Some(view) = shard.cluster.cluster_view() else {
        let (host, port) = broker_host(shard);
        return Ok((shard.cluster.node_id(), host, port));
    };
    let view = if view.image.topic_by_name(OFFSETS_TOPIC).is_none() {
        let live = view.image.live_brokers().count().clamp(1, 3) as i32;
        let created = shard
            .create_topic_in_cluster(
                OFFSETS_TOPIC.to_string(),
                shard.cluster.config.offsets_topic_partitions as i32,
                live,
                None,
                &crate::metadata::offsets_topic_configs(shard.cluster.config.offsets_segment_bytes),
            )
            .await;
        if let Err(e) = created {
            if e.code != code::TOPIC_ALREADY_EXISTS {
                spate_engine::warn_limited!(
                    "offsets topic not created",
                    "cannot create {OFFSETS_TOPIC} for the group coordinators yet: {}",
                    e.message
                );
                return Err(code::COORDINATOR_NOT_AVAILABLE);
            }
        }
        shard.cluster.cluster_view().unwrap_or(view)
    } else {
        view
    };
    let t = view
        .image
        .topic_by_name(OFFSETS_TOPIC)
        .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
    let p = crate::commit_log::partition_for(group, t.partitions.len() as u32);
    let leader = t
        .partitions
        .get(p as usize)
        .map_or(NO_LEADER, |p| p.state.leader);
    let b = view
        .image
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
    Ok((
        leader,
        b.registration.listener.host.clone(),
        i32::from(b.registration.listener.port),
    ))
}

pub async fn find_coordinator(
    shard: &Rc<crate::Shard>,
    ctx: &Ctx,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    // key_type 0 is a group; 1 (transactions) is not served.
    let supported = req.key_type == 0;
    let keys: Vec<String> = if ctx.version >= 4 {
        req.coordinator_keys
            .iter()
            .map(|k| k.as_str().to_string())
            .collect()
    } else {
        vec![req.key.as_str().to_string()]
    };
    let mut found = Vec::with_capacity(keys.len());
    for k in &keys {
        found.push(if supported {
            coordinator_of(shard, k).await
        } else {
            Err(code::COORDINATOR_NOT_AVAILABLE)
        });
    }
    let part = |r: &Result<(i32, String, i32), i16>| match r {
        Ok((id, host, port)) => (code::NONE, *id, host.clone(), *port),
        Err(e) => (*e, -1, String::new(), -1),
    };
    if ctx.version >= 4 {
        let coordinators = keys
            .iter()
            .zip(&found)
            .map(|(k, r)| {
                let (err, id, host, port) = part(r);
                Coordinator::default()
                    .with_key(sb(k))
                    .with_node_id(BrokerId(id))
                    .with_host(sb(&host))
                    .with_port(port)
                    .with_error_code(err)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (err, id, host, port) = found.first().map_or(
        (code::COORDINATOR_NOT_AVAILABLE, -1, String::new(), -1),
        part,
    );
    FindCoordinatorResponse::default()
        .with_error_code(err)
        .with_node_id(BrokerId(id))
        .with_host(sb(&host))
        .with_port(port)
}
