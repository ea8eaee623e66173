//! Consumer group APIs. Every request for group G runs on G's coordinator shard (the owner
//! of G's `__consumer_offsets` partition); the answers come back to the connection's shard.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::join_all;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;

use super::{code, sb, Ctx};
use crate::commit_log;
use crate::groups::{self, ClassicDescription, Committed, JoinOutcome, JoinRequest};
use crate::{Shard, OFFSETS_TOPIC};

/// The coordinator shard of a group and its offsets partition.
pub(super) fn coordinator(shard: &Shard, group: &str) -> Option<(usize, u32)> {
    let parts = shard.cluster.topic(OFFSETS_TOPIC)?.partitions();
    let p = commit_log::partition_for(group, parts);
    // In a cluster, only the leader of the group's offsets partition, once loaded.
    if !shard.cluster.coordinates(p) {
        return None;
    }
    shard.cluster.owner(OFFSETS_TOPIC, p as i32).map(|s| (s, p))
}

fn opt(s: &str) -> Option<kafka_protocol::protocol::StrBytes> {
    Some(sb(s))
}

pub async fn join_group(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    req: JoinGroupRequest,
    peer: &str,
) -> JoinGroupResponse {
    let group = req.group_id.0.as_str().to_string();
    let Some((coord, _)) = coordinator(shard, &group) else {
        return JoinGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE);
    };
    let j = JoinRequest {
        group,
        member_id: req.member_id.as_str().to_string(),
        group_instance_id: req
            .group_instance_id
            .as_ref()
            .map(|s| s.as_str().to_string()),
        client_id: ctx.client_id.clone(),
        client_host: format!("/{}", peer.rsplit_once(':').map_or(peer, |(h, _)| h)),
        // v0 has no rebalance timeout: it is the session timeout.
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if ctx.version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.as_str().to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_string(), p.metadata.clone()))
            .collect(),
    };
    let out: JoinOutcome = match shard
        .call(coord, move |s| {
            Box::pin(async move {
                s.groups.start_ticking();
                s.groups.join(j).await
            })
        })
        .await
    {
        Ok(o) => o,
        Err(_) => {
            return JoinGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE)
        }
    };
    JoinGroupResponse::default()
        .with_error_code(out.error)
        .with_generation_id(out.generation)
        .with_protocol_type(opt(&out.protocol_type))
        .with_protocol_name(opt(&out.protocol))
        .with_leader(sb(&out.leader))
        .with_member_id(sb(&out.member_id))
        .with_members(
            out.members
                .into_iter()
                .map(|(id, gi, meta)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(sb(&id))
                        .with_group_instance_id(gi.as_deref().map(sb))
                        .with_metadata(meta)
                })
                .collect(),
        )
}

pub async fn sync_group(shard: &Rc<Shard>, _ctx: &Ctx, req: SyncGroupRequest) -> SyncGroupResponse {
    let group = req.group_id.0.as_str().to_string();
    let Some((coord, _)) = coordinator(shard, &group) else {
        return SyncGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE);
    };
    let member = req.member_id.as_str().to_string();
    let generation = req.generation_id;
    let assignments: Vec<(String, Bytes)> = req
        .assignments
        .iter()
        .map(|a| (a.member_id.as_str().to_string(), a.assignment.clone()))
        .collect();
    match shard
        .call(coord, move |s| {
            Box::pin(async move {
                s.groups
                    .sync(&group, &member, generation, assignments)
                    .await
            })
        })
        .await
    {
        Ok(o) => SyncGroupResponse::default()
            .with_error_code(o.error)
            .with_protocol_type(opt(&o.protocol_type))
            .with_protocol_name(opt(&o.protocol))
            .with_assignment(o.assignment),
        Err(_) => SyncGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE),
    }
}

pub async fn heartbeat(shard: &Rc<Shard>, _ctx: &Ctx, req: HeartbeatRequest) -> HeartbeatResponse {
    let group = req.group_id.0.as_str().to_string();
    let Some((coord, _)) = coordinator(shard, &group) else {
        return HeartbeatResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE);
    };
    let member = req.member_id.as_str().to_string();
    let generation = req.generation_id;
    let error = shard
        .call(coord, move |s| {
            Box::pin(async move { s.groups.heartbeat(&group, &member, generation) })
        })
        .await
        .unwrap_or(code::COORDINATOR_NOT_AVAILABLE);
    HeartbeatResponse::default().with_error_code(error)
}

pub async fn leave_group(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let group = req.group_id.0.as_str().to_string();
    let Some((coord, _)) = coordinator(shard, &group) else {
        return LeaveGroupResponse::default().with_error_code(code::COORDINATOR_NOT_AVAILABLE);
    };
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.as_str().to_string(),
                    m.group_instance_id.as_ref().map(|s| s.as_str().to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.as_str().to_string(), None)]
    };
    let asked = members.clone();
    let errors = shard
        .call(coord, move |s| {
            Box::pin(async move { s.groups.leave(&group, &members) })
        })
        .await
        .unwrap_or_else(|_| {
            asked
                .iter()
                .map(|_| code::COORDINATOR_NOT_AVAILABLE)
                .collect()
        });
    if ctx.version >= 3 {
        LeaveGroupResponse::default().with_members(
            asked
                .iter()
                .zip(errors)
                .map(|((id, gi), e)| {
                    MemberResponse::default()
                        .with_member_id(sb(id))
                        .with_group_instance_id(gi.as_deref().map(sb))
                        .with_error_code(e)
                })
                .collect(),
        )
    } else {
        LeaveGroupResponse::default().with_error_code(errors.first().copied().unwrap_or(code::NONE))
    }
}

pub async fn offset_commit(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = req.group_id.0.as_str().to_string();
    let all =
        |topics: &[kafka_protocol::messages::offset_commit_request::OffsetCommitRequestTopic],
         error: i16| {
            topics
                .iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(error)
                                })
                                .collect(),
                        )
                })
                .collect::<Vec<_>>()
        };
    let Some((coord, offsets_partition)) = coordinator(shard, &group) else {
        return OffsetCommitResponse::default()
            .with_topics(all(&req.topics, code::COORDINATOR_NOT_AVAILABLE));
    };
    let member = req.member_id.as_str().to_string();
    let generation = req.generation_id_or_member_epoch;
    let version = ctx.version;
    let now = commit_log::now_ms();
    let entries: Vec<(String, i32, Option<Committed>)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(move |p| {
                (
                    t.name.0.as_str().to_string(),
                    p.partition_index,
                    Some(Committed {
                        offset: p.committed_offset,
                        leader_epoch: p.committed_leader_epoch,
                        metadata: p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.as_str().to_string())
                            .unwrap_or_default(),
                        commit_timestamp: now,
                    }),
                )
            })
        })
        .collect();
    let error = shard
        .call(coord, move |s| {
            Box::pin(async move {
                let check = s.groups.check_commit(&group, &member, generation, version);
                if check != code::NONE {
                    return check;
                }
                if let Err(e) = s.store_commits(offsets_partition, &group, &entries).await {
                    return e;
                }
                for (topic, partition, c) in entries {
                    s.groups.apply_commit(&group, &topic, partition, c);
                }
                code::NONE
            })
        })
        .await
        .unwrap_or(code::COORDINATOR_NOT_AVAILABLE);
    OffsetCommitResponse::default().with_topics(all(&req.topics, error))
}

/// The committed offsets of one group, for the partitions asked (None: all). `member` is
/// v9's member id and epoch (consumer protocol groups check them).
async fn fetch_group_offsets(
    shard: &Rc<Shard>,
    group: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    member: (Option<String>, i32),
) -> (i16, Vec<(String, Vec<(i32, Option<Committed>)>)>) {
    let Some((coord, _)) = coordinator(shard, &group) else {
        return (code::COORDINATOR_NOT_AVAILABLE, Vec::new());
    };
    let committed = match shard
        .call(coord, move |s| {
            Box::pin(async move {
                let check = s
                    .groups
                    .check_consumer_fetch(&group, member.0.as_deref(), member.1);
                if check != code::NONE {
                    return Err(check);
                }
                Ok(s.groups.committed(&group))
            })
        })
        .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return (e, Vec::new()),
        Err(_) => return (code::COORDINATOR_NOT_AVAILABLE, Vec::new()),
    };
    let out = match topics {
        Some(ts) => ts
            .into_iter()
            .map(|(t, parts)| {
                let v = parts
                    .into_iter()
                    .map(|p| (p, committed.get(&(t.clone(), p)).cloned()))
                    .collect();
                (t, v)
            })
            .collect(),
        None => {
            let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<Committed>)>> =
                Default::default();
            for ((t, p), c) in committed {
                by_topic.entry(t).or_default().push((p, Some(c)));
            }
            by_topic.into_iter().collect()
        }
    };
    (code::NONE, out)
}

pub async fn offset_fetch(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if ctx.version >= 8 {
        let mut groups_out = Vec::new();
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes))
                    .collect()
            });
            let member = (
                g.member_id.as_ref().map(|m| m.as_str().to_string()),
                g.member_epoch,
            );
            let (error, result) =
                fetch_group_offsets(shard, g.group_id.0.as_str().to_string(), topics, member).await;
            groups_out.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_error_code(error)
                    .with_topics(
                        result
                            .into_iter()
                            .map(|(t, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(super::topic_name(&t))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, c)| {
                                                let (o, e, m) = c
                                                    .map_or((-1, -1, String::new()), |c| {
                                                        (c.offset, c.leader_epoch, c.metadata)
                                                    });
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(o)
                                                    .with_committed_leader_epoch(e)
                                                    .with_metadata(Some(sb(&m)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    ),
            );
        }
        return OffsetFetchResponse::default().with_groups(groups_out);
    }
    let topics = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.as_str().to_string(), t.partition_indexes))
            .collect()
    });
    let (error, result) = fetch_group_offsets(
        shard,
        req.group_id.0.as_str().to_string(),
        topics,
        (None, -1),
    )
    .await;
    OffsetFetchResponse::default()
        .with_error_code(error)
        .with_topics(
            result
                .into_iter()
                .map(|(t, parts)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(super::topic_name(&t))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, c)| {
                                    let (o, e, m) = c.map_or((-1, -1, String::new()), |c| {
                                        (c.offset, c.leader_epoch, c.metadata)
                                    });
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(o)
                                        .with_committed_leader_epoch(e)
                                        .with_metadata(Some(sb(&m)))
                                        .with_error_code(if ctx.version < 2 {
                                            error
                                        } else {
                                            code::NONE
                                        })
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
}

pub async fn list_groups(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: ListGroupsRequest,
) -> ListGroupsResponse {
    let n = shard.cluster.shard_count();
    let lists = join_all((0..n).map(|i| {
        let shard = shard.clone();
        async move {
            shard
                .call(i, |s| Box::pin(async move { s.groups.list() }))
                .await
                .unwrap_or_default()
        }
    }))
    .await;
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.as_str().to_lowercase())
        .collect();
    // v5: a type filter ("classic", "consumer"), case-insensitive as in Kafka.
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|t| t.as_str().to_lowercase())
        .collect();
    let groups = lists
        .into_iter()
        .flatten()
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .map(|g| {
            ListedGroup::default()
                .with_group_id(GroupId(sb(&g.name)))
                .with_protocol_type(sb(&g.protocol_type))
                .with_group_state(sb(g.state))
                .with_group_type(sb(g.group_type))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn describe_groups(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    // Every group from its coordinator: one mesh call per coordinator shard.
    let coords: Vec<_> = req
        .groups
        .iter()
        .map(|g| coordinator(shard, g.0.as_str()).map(|(coord, _)| coord))
        .collect();
    let asks = req
        .groups
        .iter()
        .zip(&coords)
        .filter_map(|(g, coord)| Some(((*coord)?, g.0.as_str().to_string())))
        .collect();
    let mut described = shard
        .mesh
        .call_each(
            asks,
            |s, name| async move { s.groups.describe_classic(&name) },
        )
        .await
        .into_iter();
    let mut out = Vec::new();
    for (g, coord) in req.groups.into_iter().zip(coords) {
        let name = g.0.as_str().to_string();
        if coord.is_none() {
            out.push(
                DescribedGroup::default()
                    .with_group_id(g)
                    .with_error_code(code::COORDINATOR_NOT_AVAILABLE),
            );
            continue;
        }
        let desc = described
            .next()
            .and_then(Result::ok)
            .unwrap_or(ClassicDescription::NotFound);
        let described = match desc {
            // v6 (KIP-1043) says GROUP_ID_NOT_FOUND; before, Kafka answers an unknown group
            // (and a consumer protocol group, which is not a classic one) as "Dead" with no
            // members.
            ClassicDescription::NotFound | ClassicDescription::ConsumerGroup
                if ctx.version >= 6 =>
            {
                let message = if matches!(desc, ClassicDescription::ConsumerGroup) {
                    format!("Group {name} is not a classic group.")
                } else {
                    format!("Group {name} not found.")
                };
                DescribedGroup::default()
                    .with_error_code(groups::GROUP_ID_NOT_FOUND)
                    .with_error_message(Some(sb(&message)))
                    .with_group_id(g)
                    .with_group_state(sb("Dead"))
            }
            ClassicDescription::NotFound | ClassicDescription::ConsumerGroup => {
                DescribedGroup::default()
                    .with_group_id(g)
                    .with_group_state(sb("Dead"))
            }
            ClassicDescription::Classic(state, ptype, protocol, members) => {
                DescribedGroup::default()
                    .with_group_id(g)
                    .with_group_state(sb(state.name()))
                    .with_protocol_type(sb(&ptype))
                    .with_protocol_data(sb(&protocol))
                    .with_members(
                        members
                            .into_iter()
                            .map(|m| {
                                let metadata = m
                                    .protocols
                                    .iter()
                                    .find(|(p, _)| *p == protocol)
                                    .map(|(_, b)| b.clone())
                                    .unwrap_or_default();
                                DescribedGroupMember::default()
                                    .with_member_id(sb(&m.id))
                                    .with_group_instance_id(m.group_instance_id.as_deref().map(sb))
                                    .with_client_id(sb(&m.client_id))
                                    .with_client_host(sb(&m.client_host))
                                    .with_member_metadata(metadata)
                                    .with_member_assignment(m.assignment.clone())
                            })
                            .collect(),
                    )
            }
        };
        out.push(described);
    }
    DescribeGroupsResponse::default().with_groups(out)
}

pub async fn delete_groups(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    // Every group on its coordinator: one mesh call per coordinator shard.
    let coords: Vec<_> = req
        .groups_names
        .iter()
        .map(|g| coordinator(shard, g.0.as_str()))
        .collect();
    let asks = req
        .groups_names
        .iter()
        .zip(&coords)
        .filter_map(|(g, coord)| {
            let (coord, offsets_partition) = (*coord)?;
            Some((coord, (g.0.as_str().to_string(), offsets_partition)))
        })
        .collect();
    let mut deleted = shard
        .mesh
        .call_each(asks, |s, (name, offsets_partition)| {
            delete_group_here(s, name, offsets_partition)
        })
        .await
        .into_iter();
    let out = req
        .groups_names
        .into_iter()
        .zip(coords)
        .map(|(g, coord)| {
            let error = match coord {
                None => code::COORDINATOR_NOT_AVAILABLE,
                Some(_) => deleted
                    .next()
                    .and_then(Result::ok)
                    .unwrap_or(code::COORDINATOR_NOT_AVAILABLE),
            };
            DeletableGroupResult::default()
                .with_group_id(g)
                .with_error_code(error)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(out)
}

/// Deletes a group on its coordinator: its state, and tombstones for its offsets.
async fn delete_group_here(s: Rc<Shard>, name: String, offsets_partition: u32) -> i16 {
    let keys = match s.groups.delete(&name) {
        Ok(k) => k,
        Err(e) => return e,
    };
    let tombstones: Vec<_> = keys.into_iter().map(|(t, p)| (t, p, None)).collect();
    match s.store_commits(offsets_partition, &name, &tombstones).await {
        Ok(()) => {
            tracing::info!(group = %name, "group deleted");
            groups::NONE
        }
        Err(e) => e,
    }
}

/// OffsetDelete: removes a group's committed offsets for some partitions (tombstones in
/// `__consumer_offsets`), except those of topics a member still subscribes to.
pub async fn offset_delete(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: OffsetDeleteRequest,
) -> OffsetDeleteResponse {
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    let name = req.group_id.0.as_str().to_string();
    let asked: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.as_str().to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let answer = |error: i16, per_partition: &dyn Fn(&str) -> i16| {
        let topics = asked
            .iter()
            .map(|(topic, partitions)| {
                OffsetDeleteResponseTopic::default()
                    .with_name(TopicName(sb(topic)))
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|&p| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(per_partition(topic))
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetDeleteResponse::default()
            .with_error_code(error)
            .with_topics(if error == code::NONE {
                topics
            } else {
                Vec::new()
            })
    };
    let Some((coord, offsets_partition)) = coordinator(shard, &name) else {
        return answer(code::COORDINATOR_NOT_AVAILABLE, &|_| code::NONE);
    };
    let work = asked.clone();
    let outcome = shard
        .call(coord, move |s| {
            Box::pin(async move {
                let topics: Vec<String> = work.iter().map(|(t, _)| t.clone()).collect();
                let subscribed = s.groups.subscribed_of(&name, &topics)?;
                let committed = s.groups.committed(&name);
                let tombstones: Vec<_> = work
                    .iter()
                    .filter(|(t, _)| !subscribed.contains(t))
                    .flat_map(|(t, ps)| ps.iter().map(move |&p| (t.clone(), p)))
                    .filter(|key| committed.contains_key(key))
                    .map(|(t, p)| (t, p, None))
                    .collect();
                if !tombstones.is_empty() {
                    s.store_commits(offsets_partition, &name, &tombstones)
                        .await?;
                    for (t, p, _) in &tombstones {
                        s.groups.apply_commit(&name, t, *p, None);
                    }
                    tracing::info!(group = %name, partitions = tombstones.len(), "committed offsets deleted");
                }
                Ok(subscribed)
            })
        })
        .await;
    match outcome {
        Ok(Ok(subscribed)) => answer(code::NONE, &|t| {
            if subscribed.contains(t) {
                code::GROUP_SUBSCRIBED_TO_TOPIC
            } else {
                code::NONE
            }
        }),
        Ok(Err(e)) => answer(e, &|_| code::NONE),
        Err(_) => answer(code::COORDINATOR_NOT_AVAILABLE, &|_| code::NONE),
    }
}
