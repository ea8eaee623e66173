//! ElectLeaders: an operator asks for a partition's leader to be elected again, through the
//! controller (`Controller::elect_leader`). A preferred election gives the leadership back
//! to the first replica if it is live and in sync (ELECTION_NOT_NEEDED if it leads already,
//! PREFERRED_LEADER_NOT_AVAILABLE if it cannot); an unclean one gives a partition without a
//! live leader the first live replica, even out of the ISR (ELIGIBLE_LEADERS_NOT_AVAILABLE if
//! none is live). With no partitions named (null), every partition is tried and, as Kafka
//! does, those that need no election are left out of the answer.
//!
//! On a single broker the only replica always leads: every existing partition is
//! ELECTION_NOT_NEEDED.

use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::*;
use spate_replication::metadata::{ClusterImage, NO_LEADER};
use spate_replication::node::{Reply, Request};

use super::{code, sb, topic_name, Ctx};
use crate::Shard;

/// The controller's refusals carry their own codes (PREFERRED_LEADER_NOT_AVAILABLE 80,
/// ELIGIBLE_LEADERS_NOT_AVAILABLE 83); this one is also answered here.
const ELECTION_NOT_NEEDED: i16 = 84;

/// Elections asked of the controller at once (each is one request to the cluster node,
/// whose queue is bounded).
const ELECTIONS_IN_FLIGHT_MAX: usize = 64;

/// Kafka's `ElectionType`.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

type Outcome = (i16, Option<String>);

pub async fn elect_leaders(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    req: ElectLeadersRequest,
) -> ElectLeadersResponse {
    // v0 has no election type: preferred.
    let election_type = if ctx.version == 0 {
        PREFERRED
    } else {
        req.election_type
    };
    if election_type != PREFERRED && election_type != UNCLEAN {
        spate_engine::warn_limited!(
            "ElectLeaders refused",
            "ElectLeaders refused: unknown election type {election_type}"
        );
        return ElectLeadersResponse::default().with_error_code(code::INVALID_REQUEST);
    }
    let unclean = election_type == UNCLEAN;
    let every_partition = req.topic_partitions.is_none();
    let view = shard.cluster.cluster_view();
    // What to elect, grouped by topic in request order.
    let asked: Vec<(String, Vec<i32>)> = match req.topic_partitions {
        Some(ts) => ts
            .into_iter()
            .map(|t| (t.topic.0.as_str().to_string(), t.partitions))
            .collect(),
        None => match &view {
            Some(v) => candidates(&v.image, unclean),
            // A single broker: nothing to elect, and what needs no election is left out.
            None => Vec::new(),
        },
    };
    let mut outcomes: Vec<Vec<Outcome>> = Vec::with_capacity(asked.len());
    match shard.cluster.node_handle() {
        None => {
            for (name, partitions) in &asked {
                let count = shard.cluster.topic(name).map_or(0, |t| t.partitions());
                outcomes.push(
                    partitions
                        .iter()
                        .map(|&p| {
                            if p >= 0 && (p as u32) < count {
                                (
                                    ELECTION_NOT_NEEDED,
                                    Some("a single broker is the preferred leader of every partition".to_string()),
                                )
                            } else {
                                unknown(name, p)
                            }
                        })
                        .collect(),
                );
            }
        }
        Some(node) => {
            let mut flat = Vec::new();
            for (name, partitions) in &asked {
                for &p in partitions {
                    flat.push((name.clone(), p));
                }
            }
            let mut answers = Vec::with_capacity(flat.len());
            for chunk in flat.chunks(ELECTIONS_IN_FLIGHT_MAX) {
                let calls = chunk.iter().map(|(name, p)| {
                    let node = node.clone();
                    let name = name.clone();
                    let p = *p;
                    async move {
                        if p < 0 {
                            return unknown(&name, p);
                        }
                        let reply = node
                            .call(Request::ElectLeader {
                                topic: name.clone(),
                                partition: p as u32,
                                unclean,
                            })
                            .await;
                        match reply {
                            Reply::Refused(e) => {
                                let code = e.kafka_code();
                                if code != ELECTION_NOT_NEEDED {
                                    spate_engine::warn_limited!("election refused", topic = %name, partition = p, "ElectLeaders refused: {e}");
                                }
                                (code, Some(e.to_string()))
                            }
                            _ => {
                                tracing::info!(topic = %name, partition = p, unclean, "leader elected on request");
                                (code::NONE, None)
                            }
                        }
                    }
                });
                answers.extend(futures_util::future::join_all(calls).await);
            }
            let mut answers = answers.into_iter();
            for (_, partitions) in &asked {
                outcomes.push(
                    partitions
                        .iter()
                        .map(|_| answers.next().unwrap_or((code::UNKNOWN_SERVER_ERROR, None)))
                        .collect(),
                );
            }
        }
    }
    let mut results = Vec::with_capacity(asked.len());
    for ((name, partitions), outcomes) in asked.iter().zip(outcomes) {
        let partition_result: Vec<PartitionResult> = partitions
            .iter()
            .zip(outcomes)
            .filter(|(_, (error, _))| !(every_partition && *error == ELECTION_NOT_NEEDED))
            .map(|(&p, (error, message))| {
                PartitionResult::default()
                    .with_partition_id(p)
                    .with_error_code(error)
                    .with_error_message(message.as_deref().map(sb))
            })
            .collect();
        if every_partition && partition_result.is_empty() {
            continue;
        }
        results.push(
            ReplicaElectionResult::default()
                .with_topic(topic_name(name))
                .with_partition_result(partition_result),
        );
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

fn unknown(name: &str, p: i32) -> Outcome {
    (
        code::UNKNOWN_TOPIC_OR_PARTITION,
        Some(format!("unknown partition {name}-{p}")),
    )
}

/// Every partition (null `topic_partitions`) that may need the election, by this broker's
/// image: the controller decides, but one the image shows needs none is left out (it would
/// be answered ELECTION_NOT_NEEDED, which is not reported for every partition).
fn candidates(image: &ClusterImage, unclean: bool) -> Vec<(String, Vec<i32>)> {
    image
        .topics
        .values()
        .filter_map(|t| {
            let partitions: Vec<i32> = t
                .partitions
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    let leader = p.state.leader;
                    if unclean {
                        leader == NO_LEADER || !image.is_live(leader)
                    } else {
                        p.assignment.replicas.first() != Some(&leader)
                    }
                })
                .map(|(i, _)| i as i32)
                .collect();
            (!partitions.is_empty()).then(|| (t.name.clone(), partitions))
        })
        .collect()
}
