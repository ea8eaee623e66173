//! Group membership: joining a group (JoinGroup, then SyncGroup; the leader computes the
//! assignment with the range assignor), heartbeats that keep the membership and rejoin after
//! a rebalance, and leaving. The consumer protocol's subscription and assignment payloads are
//! encoded and decoded here. Every call first settles the fetch ahead (the coordinator may be
//! a leader with a fetch in flight).

use std::time::{Duration, Instant};

use bytes::Buf;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTp;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};

use super::assignor::range_assign;
use super::GroupConsumer;
use crate::{sb, Client, ClientError};

const SESSION_TIMEOUT_MS: i32 = 30_000;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

impl GroupConsumer {
    pub(super) fn join(
        &mut self,
        client: &mut Client,
        group: &str,
        partitions: &[i32],
    ) -> Result<Vec<i32>, ClientError> {
        let mut sub = BytesMutWriter::default();
        let subscription =
            ConsumerProtocolSubscription::default().with_topics(vec![sb(&self.topic)]);
        sub.version(0);
        subscription
            .encode(&mut sub.0, 0)
            .map_err(|e| ClientError::Protocol(format!("encoding a subscription: {e}")))?;
        let metadata = sub.0.freeze();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let req = JoinGroupRequest::default()
                .with_group_id(GroupId(sb(group)))
                .with_session_timeout_ms(SESSION_TIMEOUT_MS)
                .with_rebalance_timeout_ms(60_000)
                .with_member_id(sb(&self.member_id))
                .with_protocol_type(sb("consumer"))
                .with_protocols(vec![JoinGroupRequestProtocol::default()
                    .with_name(sb("range"))
                    .with_metadata(metadata.clone())]);
            let resp: JoinGroupResponse = client.coordinator(group)?.call(req, 2, 7)?;
            if resp.error_code == 79 {
                // MEMBER_ID_REQUIRED: rejoin with the id the coordinator gave.
                self.member_id = resp.member_id.as_str().to_string();
                continue;
            }
            if resp.error_code == 25 {
                self.member_id.clear();
                continue;
            }
            if crate::is_coordinator_retriable(resp.error_code)
                && std::time::Instant::now() < deadline
            {
                // The coordinator moved or is loading its groups.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            if resp.error_code != 0 {
                return Err(ClientError::Kafka {
                    code: resp.error_code,
                    context: format!("joining group {group}"),
                });
            }
            self.member_id = resp.member_id.as_str().to_string();
            self.generation = resp.generation_id;
            let mut assignments = Vec::new();
            if resp.leader.as_str() == self.member_id {
                let mut members = Vec::new();
                for m in &resp.members {
                    let mut meta = m.metadata.clone();
                    let topics = if meta.remaining() >= 2 {
                        let v = meta.get_i16();
                        ConsumerProtocolSubscription::decode(&mut meta, v.clamp(0, 3))
                            .map(|s| s.topics.iter().map(|t| t.as_str().to_string()).collect())
                            .unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    members.push((m.member_id.as_str().to_string(), topics));
                }
                for (member, parts) in range_assign(&members, &self.topic, partitions) {
                    let mut w = BytesMutWriter::default();
                    w.version(0);
                    ConsumerProtocolAssignment::default()
                        .with_assigned_partitions(vec![AssignedTp::default()
                            .with_topic(TopicName(sb(&self.topic)))
                            .with_partitions(parts)])
                        .encode(&mut w.0, 0)
                        .map_err(|e| {
                            ClientError::Protocol(format!("encoding an assignment: {e}"))
                        })?;
                    assignments.push(
                        SyncGroupRequestAssignment::default()
                            .with_member_id(sb(&member))
                            .with_assignment(w.0.freeze()),
                    );
                }
            }
            let req = SyncGroupRequest::default()
                .with_group_id(GroupId(sb(group)))
                .with_generation_id(self.generation)
                .with_member_id(sb(&self.member_id))
                .with_assignments(assignments);
            let resp: SyncGroupResponse = client.coordinator(group)?.call(req, 1, 3)?;
            if resp.error_code == 27 {
                continue; // a rebalance started meanwhile: join again
            }
            if resp.error_code != 0 {
                return Err(ClientError::Kafka {
                    code: resp.error_code,
                    context: format!("syncing group {group}"),
                });
            }
            self.last_heartbeat = Instant::now();
            let mut a = resp.assignment.clone();
            if a.remaining() < 2 {
                return Ok(Vec::new());
            }
            let v = a.get_i16();
            let assignment = ConsumerProtocolAssignment::decode(&mut a, v.clamp(0, 3))
                .map_err(|e| ClientError::Protocol(format!("decoding an assignment: {e}")))?;
            return Ok(assignment
                .assigned_partitions
                .into_iter()
                .filter(|t| t.topic.0.as_str() == self.topic)
                .flat_map(|t| t.partitions)
                .collect());
        }
    }

    /// Tells the group coordinator this member is alive, if a heartbeat is due (every 3 s),
    /// and rejoins if the group rebalanced. `poll` does it; a consumer that stops polling
    /// for a while (paused) calls it to keep its membership.
    pub fn heartbeat(&mut self, client: &mut Client) -> Result<(), ClientError> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        if self.last_heartbeat.elapsed() < HEARTBEAT_EVERY {
            return Ok(());
        }
        self.last_heartbeat = Instant::now();
        self.settle(client)?;
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(sb(&group)))
            .with_generation_id(self.generation)
            .with_member_id(sb(&self.member_id));
        let resp: HeartbeatResponse = client.coordinator(&group)?.call(req, 0, 3)?;
        if matches!(resp.error_code, 22 | 25 | 27) {
            let committed = self.commit(client);
            self.start(client)?;
            self.note_reset(format!(
                "rejoined the group after heartbeat error {} (commit before: {}); positions now {:?}",
                resp.error_code,
                committed.map_or_else(|e| e.to_string(), |()| "ok".into()),
                self.positions
            ));
        }
        Ok(())
    }

    /// Leaves the group (a no-op without one).
    pub fn leave(&mut self, client: &mut Client) -> Result<(), ClientError> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        self.settle(client)?;
        let req = LeaveGroupRequest::default()
            .with_group_id(GroupId(sb(&group)))
            .with_member_id(sb(&self.member_id))
            .with_members(vec![
                MemberIdentity::default().with_member_id(sb(&self.member_id))
            ]);
        let conn = client.coordinator(&group)?;
        let v = conn.version_for::<LeaveGroupRequest>(0, 4)?;
        let req = if v < 3 {
            req.with_members(Vec::new())
        } else {
            req.with_member_id(sb(""))
        };
        let _: LeaveGroupResponse = conn.call_at(req, v)?;
        Ok(())
    }
}

/// A buffer for the consumer protocol's version-prefixed payloads.
#[derive(Default)]
struct BytesMutWriter(bytes::BytesMut);

impl BytesMutWriter {
    fn version(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
}
