//! Consuming: fetches from partition leaders, decodes batches (any codec), and, with a group,
//! joins it (range assignment when this member leads), resumes from committed offsets and
//! commits what it returned.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTp;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable};
use kafka_protocol::records::RecordBatchDecoder;

use super::{sb, Client, ClientError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Decodes a fetched record set, ignoring a partial batch at its end and records before `from`.
pub fn decode_records(
    partition: i32,
    records: &Bytes,
    from: i64,
) -> Result<Vec<Consumed>, ClientError> {
    let mut out = Vec::new();
    let mut rest = records.clone();
    while rest.len() >= 12 {
        let len = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        if len < 0 || rest.len() < 12 + len as usize {
            break; // partial batch: the next fetch starts there
        }
        let mut batch = rest.split_to(12 + len as usize);
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| {
            ClientError::Protocol(format!(
                "decoding a record batch of partition {partition}: {e}"
            ))
        })?;
        for r in set.records {
            if r.control || r.offset < from {
                continue;
            }
            out.push(Consumed {
                partition,
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.as_str().to_string(), v))
                    .collect(),
            });
        }
    }
    let _ = rest.remaining();
    Ok(out)
}

/// A partition's records from one fetch, or its Kafka error code.
pub type PartitionFetch = (i32, Result<Vec<Consumed>, i16>);

impl Client {
    /// One fetch from `leader` for `(partition, offset)` pairs of `topic`. Returns the records
    /// per partition, or the partition's error code.
    pub fn fetch(
        &mut self,
        leader: i32,
        topic: &str,
        positions: &[(i32, i64)],
        max_wait_ms: i32,
    ) -> Result<Vec<PartitionFetch>, ClientError> {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(64 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(sb(topic)))
                .with_partitions(
                    positions
                        .iter()
                        .map(|(p, o)| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_fetch_offset(*o)
                                .with_partition_max_bytes(4 << 20)
                        })
                        .collect(),
                )]);
        let resp: FetchResponse = self.broker(leader)?.call(req, 4, 11)?;
        let mut out = Vec::new();
        for t in resp.responses {
            for p in t.partitions {
                if p.error_code != 0 {
                    out.push((p.partition_index, Err(p.error_code)));
                    continue;
                }
                let from = positions
                    .iter()
                    .find(|(i, _)| *i == p.partition_index)
                    .map_or(0, |(_, o)| *o);
                let recs = match &p.records {
                    Some(r) => decode_records(p.partition_index, r, from)?,
                    None => Vec::new(),
                };
                out.push((p.partition_index, Ok(recs)));
            }
        }
        Ok(out)
    }
}

/// A consumer of one topic, alone or as a member of a group.
pub struct GroupConsumer {
    pub topic: String,
    pub group: Option<String>,
    start: StartAt,
    member_id: String,
    generation: i32,
    /// Assigned partitions and the next offset of each.
    positions: BTreeMap<i32, i64>,
    leaders: BTreeMap<i32, i32>,
    last_heartbeat: Instant,
}

const SESSION_TIMEOUT_MS: i32 = 30_000;
const HEARTBEAT_EVERY: Duration = Duration::from_secs(3);

fn range_assign(
    members: &[(String, Vec<String>)],
    topic: &str,
    partitions: &[i32],
) -> BTreeMap<String, Vec<i32>> {
    let subscribed: Vec<&String> = members
        .iter()
        .filter(|(_, t)| t.iter().any(|x| x == topic))
        .map(|(m, _)| m)
        .collect();
    let mut out: BTreeMap<String, Vec<i32>> = members
        .iter()
        .map(|(m, _)| (m.clone(), Vec::new()))
        .collect();
    if subscribed.is_empty() {
        return out;
    }
    let mut sorted = subscribed.clone();
    sorted.sort();
    let per = partitions.len() / sorted.len();
    let extra = partitions.len() % sorted.len();
    let mut at = 0;
    for (i, m) in sorted.iter().enumerate() {
        let n = per + usize::from(i < extra);
        out.insert((*m).clone(), partitions[at..at + n].to_vec());
        at += n;
    }
    out
}

impl GroupConsumer {
    pub fn new(topic: &str, group: Option<&str>, start: StartAt) -> Self {
        Self {
            topic: topic.to_string(),
            group: group.map(str::to_string),
            start,
            member_id: String::new(),
            generation: -1,
            positions: BTreeMap::new(),
            leaders: BTreeMap::new(),
            last_heartbeat: Instant::now(),
        }
    }

    /// Moves a partition's position back to `offset` if it is past it.
    pub fn rewind(&mut self, partition: i32, offset: i64) {
        if let Some(p) = self.positions.get_mut(&partition) {
            if *p > offset {
                *p = offset;
            }
        }
    }

    pub fn assignment(&self) -> Vec<i32> {
        self.positions.keys().copied().collect()
    }

    /// Joins (or, without a group, takes every partition) and sets start positions.
    pub fn start(&mut self, client: &mut Client) -> Result<(), ClientError> {
        let info = client.topic(&self.topic, false)?;
        self.leaders = info.partitions.iter().copied().collect();
        let partitions: Vec<i32> = info.partitions.iter().map(|(p, _)| *p).collect();
        let assigned = match self.group.clone() {
            None => partitions,
            Some(g) => self.join(client, &g, &partitions)?,
        };
        let committed = match self.group.clone() {
            Some(g) => self.committed(client, &g, &assigned)?,
            None => BTreeMap::new(),
        };
        self.positions.clear();
        for p in assigned {
            let leader = self.leaders.get(&p).copied().unwrap_or(-1);
            let at = match committed.get(&p) {
                Some(o) if *o >= 0 => *o,
                _ => client.list_offset(
                    &self.topic,
                    p,
                    leader,
                    if self.start == StartAt::Earliest {
                        -2
                    } else {
                        -1
                    },
                )?,
            };
            self.positions.insert(p, at);
        }
        Ok(())
    }

    fn join(
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

    fn committed(
        &self,
        client: &mut Client,
        group: &str,
        parts: &[i32],
    ) -> Result<BTreeMap<i32, i64>, ClientError> {
        let req = OffsetFetchRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(TopicName(sb(&self.topic)))
                .with_partition_indexes(parts.to_vec())]));
        let resp: OffsetFetchResponse = client.coordinator(group)?.call(req, 1, 7)?;
        if resp.error_code != 0 {
            return Err(ClientError::Kafka {
                code: resp.error_code,
                context: format!("committed offsets of group {group}"),
            });
        }
        Ok(resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (p.partition_index, p.committed_offset))
            })
            .collect())
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
        let req = HeartbeatRequest::default()
            .with_group_id(GroupId(sb(&group)))
            .with_generation_id(self.generation)
            .with_member_id(sb(&self.member_id));
        let resp: HeartbeatResponse = client.coordinator(&group)?.call(req, 0, 3)?;
        if matches!(resp.error_code, 22 | 25 | 27) {
            self.commit(client).ok();
            self.start(client)?;
        }
        Ok(())
    }

    /// Fetches once (waiting up to `max_wait`), advancing positions past what it returns.
    pub fn poll(
        &mut self,
        client: &mut Client,
        max_wait: Duration,
    ) -> Result<Vec<Consumed>, ClientError> {
        self.heartbeat(client)?;
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for (p, o) in &self.positions {
            by_leader
                .entry(self.leaders.get(p).copied().unwrap_or(-1))
                .or_default()
                .push((*p, *o));
        }
        let mut out = Vec::new();
        if by_leader.is_empty() {
            std::thread::sleep(max_wait);
        }
        for (leader, positions) in by_leader {
            for (p, result) in
                client.fetch(leader, &self.topic, &positions, max_wait.as_millis() as i32)?
            {
                match result {
                    Ok(recs) => {
                        if let Some(last) = recs.last() {
                            self.positions.insert(p, last.offset + 1);
                        }
                        out.extend(recs);
                    }
                    Err(1) => {
                        // OFFSET_OUT_OF_RANGE: start over from the reset policy.
                        let at = client.list_offset(
                            &self.topic,
                            p,
                            leader,
                            if self.start == StartAt::Earliest {
                                -2
                            } else {
                                -1
                            },
                        )?;
                        self.positions.insert(p, at);
                    }
                    Err(code) => {
                        return Err(ClientError::Kafka {
                            code,
                            context: format!("fetch {}-{p}", self.topic),
                        })
                    }
                }
            }
        }
        Ok(out)
    }

    /// Commits the current positions (a no-op without a group).
    pub fn commit(&mut self, client: &mut Client) -> Result<(), ClientError> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(sb(&group)))
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(sb(&self.member_id))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(sb(&self.topic)))
                .with_partitions(
                    self.positions
                        .iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                        })
                        .collect(),
                )]);
        let resp: OffsetCommitResponse = client.coordinator(&group)?.call(req, 2, 7)?;
        for t in resp.topics {
            for p in t.partitions {
                if p.error_code != 0 {
                    return Err(ClientError::Kafka {
                        code: p.error_code,
                        context: format!("commit {}-{}", self.topic, p.partition_index),
                    });
                }
            }
        }
        Ok(())
    }

    /// Leaves the group (a no-op without one).
    pub fn leave(&mut self, client: &mut Client) -> Result<(), ClientError> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_assignment_splits_evenly() {
        let members = vec![
            ("b".to_string(), vec!["t".to_string()]),
            ("a".to_string(), vec!["t".to_string()]),
        ];
        let a = range_assign(&members, "t", &[0, 1, 2, 3, 4]);
        assert_eq!(a["a"], vec![0, 1, 2]);
        assert_eq!(a["b"], vec![3, 4]);
    }
}
