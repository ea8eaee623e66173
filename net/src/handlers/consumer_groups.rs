//! ConsumerGroupHeartbeat and ConsumerGroupDescribe, the KIP-848 consumer group protocol.
//! Every request for group G runs on G's coordinator shard, as the classic group APIs do;
//! the answer is built there and comes back to the connection's shard.

use std::rc::Rc;
use std::time::Instant;

use kafka_protocol::messages::consumer_group_describe_response::{
    self as describe_response, DescribedGroup,
};
use kafka_protocol::messages::consumer_group_heartbeat_response;
use kafka_protocol::messages::*;

use super::groups::coordinator;
use super::{code, sb, Ctx};
use crate::groups::consumer::{
    Assignment, ConsumerDescription, GroupError, HeartbeatAnswer, HeartbeatRequest,
};
use crate::Shard;

fn owned_of(
    parts: &[kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions],
) -> Assignment {
    Assignment::from_pairs(
        parts
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, *p))),
    )
}

fn error_response(e: &GroupError) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(e.code)
        .with_error_message(Some(sb(&e.message)))
}

fn answer_response(a: HeartbeatAnswer) -> ConsumerGroupHeartbeatResponse {
    let assignment = a.assignment.map(|a| {
        consumer_group_heartbeat_response::Assignment::default().with_topic_partitions(
            a.topics()
                .map(|(t, ps)| {
                    consumer_group_heartbeat_response::TopicPartitions::default()
                        .with_topic_id(t)
                        .with_partitions(ps.iter().copied().collect())
                })
                .collect(),
        )
    });
    ConsumerGroupHeartbeatResponse::default()
        .with_member_id(Some(sb(&a.member_id)))
        .with_member_epoch(a.member_epoch)
        .with_heartbeat_interval_ms(a.heartbeat_interval_ms)
        .with_assignment(assignment)
}

pub async fn consumer_group_heartbeat(
    shard: &Rc<Shard>,
    ctx: &Ctx,
    req: ConsumerGroupHeartbeatRequest,
    peer: &str,
) -> ConsumerGroupHeartbeatResponse {
    let group = req.group_id.0.as_str().to_string();
    let Some((coord, _)) = coordinator(shard, &group) else {
        return ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code::COORDINATOR_NOT_AVAILABLE);
    };
    let hb = HeartbeatRequest {
        member_id: req.member_id.as_str().to_string(),
        member_epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.as_str().to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.as_str().to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        subscribed_topic_names: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.0.as_str().to_string()).collect()),
        subscribed_topic_regex: req
            .subscribed_topic_regex
            .as_ref()
            .map(|s| s.as_str().to_string()),
        server_assignor: req.server_assignor.as_ref().map(|s| s.as_str().to_string()),
        owned: req.topic_partitions.as_deref().map(owned_of),
        client_id: ctx.client_id.clone(),
        client_host: format!("/{}", peer.rsplit_once(':').map_or(peer, |(h, _)| h)),
    };
    let version = ctx.version;
    let outcome = shard
        .call(coord, move |s| {
            Box::pin(async move {
                s.groups.start_ticking();
                let metadata = s.cluster.metadata();
                s.groups
                    .consumer_heartbeat(&group, hb, version, &metadata, Instant::now())
            })
        })
        .await;
    match outcome {
        Ok(Ok(a)) => answer_response(a),
        Ok(Err(e)) => error_response(&e),
        Err(_) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(code::COORDINATOR_NOT_AVAILABLE),
    }
}

fn described_assignment(d: &ConsumerDescription, a: &Assignment) -> describe_response::Assignment {
    describe_response::Assignment::default().with_topic_partitions(
        a.topics()
            .map(|(t, ps)| {
                describe_response::TopicPartitions::default()
                    .with_topic_id(t)
                    .with_topic_name(super::topic_name(d.image.name_of(t).unwrap_or("")))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

/// The description of one group, built on its coordinator.
fn describe_here(s: &Shard, group: &str) -> DescribedGroup {
    let d = match s.groups.consumer_describe(group) {
        Ok(d) => d,
        Err(e) => {
            return DescribedGroup::default()
                .with_group_id(GroupId(sb(group)))
                .with_error_code(e.code)
                .with_error_message(Some(sb(&e.message)))
        }
    };
    let members = d
        .members
        .iter()
        .map(|(m, target)| {
            describe_response::Member::default()
                .with_member_id(sb(&m.id))
                .with_instance_id(m.instance_id.as_deref().map(sb))
                .with_rack_id(m.rack_id.as_deref().map(sb))
                .with_member_epoch(m.epoch)
                .with_client_id(sb(&m.client_id))
                .with_client_host(sb(&m.client_host))
                .with_subscribed_topic_names(
                    m.subscribed_names
                        .iter()
                        .map(|n| super::topic_name(n))
                        .collect(),
                )
                .with_subscribed_topic_regex(m.subscribed_regex.as_deref().map(sb))
                .with_assignment(described_assignment(&d, &m.assigned))
                .with_target_assignment(described_assignment(&d, target))
                // v1: 1 is a member of the consumer protocol (0 would be a classic one).
                .with_member_type(1)
        })
        .collect();
    DescribedGroup::default()
        .with_group_id(GroupId(sb(group)))
        .with_group_state(sb(d.state.name()))
        .with_group_epoch(d.group_epoch)
        .with_assignment_epoch(d.assignment_epoch)
        .with_assignor_name(sb(&d.assignor))
        .with_members(members)
}

pub async fn consumer_group_describe(
    shard: &Rc<Shard>,
    _ctx: &Ctx,
    req: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    // Every group from its coordinator: one mesh call per coordinator shard.
    let coords: Vec<_> = req
        .group_ids
        .iter()
        .map(|g| coordinator(shard, g.0.as_str()).map(|(c, _)| c))
        .collect();
    let asks = req
        .group_ids
        .iter()
        .zip(&coords)
        .filter_map(|(g, c)| Some(((*c)?, g.0.as_str().to_string())))
        .collect();
    let mut described = shard
        .mesh
        .call_each(asks, |s, name| async move { describe_here(&s, &name) })
        .await
        .into_iter();
    let groups = req
        .group_ids
        .into_iter()
        .zip(coords)
        .map(|(g, c)| {
            let unavailable = || {
                DescribedGroup::default()
                    .with_group_id(g.clone())
                    .with_error_code(code::COORDINATOR_NOT_AVAILABLE)
            };
            match c {
                None => unavailable(),
                Some(_) => described
                    .next()
                    .and_then(Result::ok)
                    .unwrap_or_else(unavailable),
            }
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
