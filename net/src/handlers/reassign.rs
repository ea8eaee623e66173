//! AlterPartitionReassignments and ListPartitionReassignments: moving a partition's replicas
//! to other brokers of a cluster, through the controller (`Controller::reassign`): the new
//! replicas copy the log while clients go on, join the ISR, then the old ones are dropped.
//! On a single broker there is nothing to move to: every partition is refused with
//! INVALID_REPLICA_ASSIGNMENT.

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::*;
use spate_replication::node::{Reply, Request};

use super::{sb, topic_name, Ctx};
use crate::Shard;

const INVALID_REPLICA_ASSIGNMENT: i16 = 39;

pub async fn alter_partition_reassignments(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let node = shard.cluster.node_handle();
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.as_str().to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let (error, message) = match &node {
                None => (
                    INVALID_REPLICA_ASSIGNMENT,
                    Some("a single broker has no other broker to move replicas to".to_string()),
                ),
                Some(node) => {
                    let target = p
                        .replicas
                        .as_ref()
                        .map(|r| r.iter().map(|b| b.0).collect::<Vec<i32>>());
                    let reply = node
                        .call(Request::Reassign {
                            topic: name.clone(),
                            partition: p.partition_index.max(0) as u32,
                            target: target.clone(),
                        })
                        .await;
                    match reply {
                        Reply::Refused(e) => {
                            spate_engine::warn_limited!("reassignment refused", topic = %name, partition = p.partition_index, "reassignment refused: {e}");
                            (e.kafka_code(), Some(e.to_string()))
                        }
                        _ => {
                            match &target {
                                Some(to) => {
                                    tracing::info!(topic = %name, partition = p.partition_index, ?to, "partition reassignment started")
                                }
                                None => {
                                    tracing::info!(topic = %name, partition = p.partition_index, "partition reassignment cancelled")
                                }
                            }
                            (0, None)
                        }
                    }
                }
            };
            partitions.push(
                ReassignablePartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(error)
                    .with_error_message(message.as_deref().map(sb)),
            );
        }
        topics.push(
            ReassignableTopicResponse::default()
                .with_name(topic_name(&name))
                .with_partitions(partitions),
        );
    }
    AlterPartitionReassignmentsResponse::default().with_responses(topics)
}

pub async fn list_partition_reassignments(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let Some(view) = shard.cluster.cluster_view() else {
        return ListPartitionReassignmentsResponse::default();
    };
    let wanted: Option<Vec<(String, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes))
            .collect()
    });
    let ids = |v: &[i32]| v.iter().map(|b| BrokerId(*b)).collect::<Vec<_>>();
    let mut out = Vec::new();
    for t in view.image.topics.values() {
        let asked = match &wanted {
            None => None,
            Some(w) => match w.iter().find(|(n, _)| *n == t.name) {
                Some((_, ps)) => Some(ps.clone()),
                None => continue,
            },
        };
        let partitions: Vec<_> = t
            .partitions
            .iter()
            .enumerate()
            .filter(|(i, _)| asked.as_ref().is_none_or(|ps| ps.contains(&(*i as i32))))
            .filter_map(|(i, p)| {
                let target = p.target.as_ref()?;
                let replicas = &p.assignment.replicas;
                let adding: Vec<i32> = target
                    .iter()
                    .copied()
                    .filter(|r| !p.state.isr.contains(r) || !replicas.contains(r))
                    .collect();
                let removing: Vec<i32> = replicas
                    .iter()
                    .copied()
                    .filter(|r| !target.contains(r))
                    .collect();
                Some(
                    OngoingPartitionReassignment::default()
                        .with_partition_index(i as i32)
                        .with_replicas(ids(replicas))
                        .with_adding_replicas(ids(&adding))
                        .with_removing_replicas(ids(&removing)),
                )
            })
            .collect();
        if !partitions.is_empty() {
            out.push(
                OngoingTopicReassignment::default()
                    .with_name(topic_name(&t.name))
                    .with_partitions(partitions),
            );
        }
    }
    ListPartitionReassignmentsResponse::default().with_topics(out)
}
