//! Consuming: fetches from partition leaders, decodes batches (any codec), and, with a group,
//! joins it (range assignment when this member leads), resumes from committed offsets and
//! commits what it returned.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::decompress;
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

use crate::{sb, Client, ClientError};

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

/// The most bytes one fetched record batch may decompress to: a broker (or a corrupt batch)
/// cannot make the client allocate more for one batch.
pub const MAX_DECOMPRESSED_BATCH: usize = 256 << 20;

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
        let set = decompress::decode_batch(&mut batch, MAX_DECOMPRESSED_BATCH).map_err(|e| {
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

/// A fetch sent and not yet answered: the consumer's fetch ahead.
pub struct InFlightFetch {
    leader: i32,
    correlation: i32,
    version: i16,
    /// The positions it was sent for.
    positions: Vec<(i32, i64)>,
    /// The client's connection epoch when it was sent (a reset since loses it).
    epoch: u64,
}

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
        let sent = self.fetch_send(leader, topic, positions, max_wait_ms)?;
        let resp = self.fetch_receive(&sent)?;
        decode_fetch(resp, positions)
    }

    /// Sends a fetch without waiting for its response ([`Client::fetch_receive`] reads it;
    /// nothing else may be sent to that broker meanwhile).
    pub fn fetch_send(
        &mut self,
        leader: i32,
        topic: &str,
        positions: &[(i32, i64)],
        max_wait_ms: i32,
    ) -> Result<InFlightFetch, ClientError> {
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
                                .with_partition_max_bytes(PARTITION_MAX_BYTES)
                        })
                        .collect(),
                )]);
        let epoch = self.epoch();
        let conn = self.broker(leader)?;
        let version = conn.version_for::<FetchRequest>(4, 11)?;
        let correlation = conn.send_only(req, version)?;
        Ok(InFlightFetch {
            leader,
            correlation,
            version,
            positions: positions.to_vec(),
            epoch,
        })
    }

    /// The response to a fetch sent with [`Client::fetch_send`].
    pub fn fetch_receive(&mut self, sent: &InFlightFetch) -> Result<FetchResponse, ClientError> {
        if sent.epoch != self.epoch() {
            return Err(ClientError::Protocol(
                "the connection a fetch was sent on was reset".into(),
            ));
        }
        self.broker(sent.leader)?
            .receive::<FetchRequest>(sent.correlation, sent.version)
    }
}

/// Bytes asked per partition in a fetch.
const PARTITION_MAX_BYTES: i32 = 4 << 20;

/// A response at least this large means the consumer is behind: it fetches ahead.
const FETCH_AHEAD_BYTES: usize = 1 << 20;

/// Decodes every partition of a fetch response sent for `positions`.
fn decode_fetch(
    resp: FetchResponse,
    positions: &[(i32, i64)],
) -> Result<Vec<PartitionFetch>, ClientError> {
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

/// The offset after the last whole batch of a fetched record set, read from the batch
/// headers alone (base offset and last offset delta); `None` if it holds no whole batch.
pub fn next_offset_after(records: &[u8]) -> Option<i64> {
    let mut rest = records;
    let mut next = None;
    while rest.len() >= 27 {
        let base = i64::from_be_bytes(rest[..8].try_into().ok()?);
        let len = i32::from_be_bytes(rest[8..12].try_into().ok()?);
        if len < 15 || rest.len() < 12 + len as usize {
            break; // partial batch: the next fetch starts there
        }
        let delta = i32::from_be_bytes(rest[23..27].try_into().ok()?);
        next = Some(base.checked_add(i64::from(delta) + 1)?);
        rest = &rest[12 + len as usize..];
    }
    next
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
    /// Fetches sent ahead (at most one per leader), and answers to them read early (before
    /// another request on the connection); their records are not returned yet.
    ahead: Vec<InFlightFetch>,
    answered: Vec<(InFlightFetch, FetchResponse)>,
    fetches_ahead: u64,
    /// Why positions were set again after the start (a rejoin, an out-of-range offset), the
    /// first few, for a caller that wants to say why records came again.
    resets: Vec<String>,
}

/// Reasons kept in `GroupConsumer::resets`, at most.
const RESETS_KEPT: usize = 8;

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
            ahead: Vec::new(),
            answered: Vec::new(),
            fetches_ahead: 0,
            resets: Vec::new(),
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

    /// How many fetches were sent ahead of the records being returned (see `poll`).
    pub fn fetches_ahead(&self) -> u64 {
        self.fetches_ahead
    }

    pub fn assignment(&self) -> Vec<i32> {
        self.positions.keys().copied().collect()
    }

    /// Joins (or, without a group, takes every partition) and sets start positions.
    pub fn start(&mut self, client: &mut Client) -> Result<(), ClientError> {
        self.settle(client)?;
        self.answered.clear();
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

    /// Fetches once (waiting up to `max_wait`), advancing positions past what it returns.
    ///
    /// A consumer that is behind (a large answer) sends its next fetch before decoding this
    /// one's records, as Kafka's consumers do, so the broker reads and sends while this
    /// client decodes. Other requests first read that answer and keep it for the next poll.
    pub fn poll(
        &mut self,
        client: &mut Client,
        max_wait: Duration,
    ) -> Result<Vec<Consumed>, ClientError> {
        self.heartbeat(client)?;
        let max_wait_ms = max_wait.as_millis().min(i32::MAX as u128) as i32;
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
            let resp = match self.answer_for(client, leader, &positions)? {
                Some(resp) => resp,
                None => {
                    let sent = client.fetch_send(leader, &self.topic, &positions, max_wait_ms)?;
                    client.fetch_receive(&sent)?
                }
            };
            let mut errors = false;
            let mut bytes = 0usize;
            for p in resp.responses.iter().flat_map(|t| t.partitions.iter()) {
                if p.error_code != 0 {
                    errors = true;
                    continue;
                }
                let Some(records) = &p.records else { continue };
                bytes += records.len();
                if let Some(next) = next_offset_after(records) {
                    if let Some(at) = self.positions.get_mut(&p.partition_index) {
                        *at = (*at).max(next);
                    }
                }
            }
            if !errors && bytes >= FETCH_AHEAD_BYTES {
                let next: Vec<(i32, i64)> = positions
                    .iter()
                    .map(|(p, o)| (*p, self.positions.get(p).copied().unwrap_or(*o)))
                    .collect();
                self.ahead
                    .push(client.fetch_send(leader, &self.topic, &next, max_wait_ms)?);
                self.fetches_ahead += 1;
            }
            let decoded = match decode_fetch(resp, &positions) {
                Ok(d) => d,
                Err(e) => {
                    // Not returned, so not consumed: back to where this fetch started.
                    self.positions.extend(positions.iter().copied());
                    self.discard_ahead(client, leader);
                    return Err(e);
                }
            };
            for (p, result) in decoded {
                match result {
                    Ok(recs) => out.extend(recs),
                    Err(1) => {
                        // OFFSET_OUT_OF_RANGE: start over from the reset policy.
                        self.settle(client)?;
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
                        let asked = positions.iter().find(|(q, _)| *q == p).map(|(_, o)| *o);
                        self.note_reset(format!(
                            "partition {p}: offset {asked:?} out of range, restarted at {at}"
                        ));
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

    /// The answer to a fetch sent ahead to `leader`, if it was sent for `positions` (a
    /// rewind or a rebalance since makes it useless: it is read and dropped).
    fn answer_for(
        &mut self,
        client: &mut Client,
        leader: i32,
        positions: &[(i32, i64)],
    ) -> Result<Option<FetchResponse>, ClientError> {
        if let Some(i) = self.answered.iter().position(|(s, _)| s.leader == leader) {
            let (sent, resp) = self.answered.remove(i);
            return Ok((sent.positions == positions).then_some(resp));
        }
        let Some(i) = self.ahead.iter().position(|s| s.leader == leader) else {
            return Ok(None);
        };
        let sent = self.ahead.remove(i);
        if sent.epoch != client.epoch() {
            return Ok(None);
        }
        let resp = client.fetch_receive(&sent)?;
        Ok((sent.positions == positions).then_some(resp))
    }

    /// Reads the answers to fetches sent ahead, so the connections are free for another
    /// request; the answers are kept for the next poll.
    fn settle(&mut self, client: &mut Client) -> Result<(), ClientError> {
        while let Some(sent) = self.ahead.pop() {
            if sent.epoch != client.epoch() {
                continue;
            }
            let resp = client.fetch_receive(&sent)?;
            self.answered.push((sent, resp));
        }
        Ok(())
    }

    /// Reads and drops the answer to a fetch sent ahead to `leader`.
    fn discard_ahead(&mut self, client: &mut Client, leader: i32) {
        self.answered.retain(|(s, _)| s.leader != leader);
        if let Some(i) = self.ahead.iter().position(|s| s.leader == leader) {
            let sent = self.ahead.remove(i);
            let _ = client.fetch_receive(&sent);
        }
    }

    /// Commits the current positions (a no-op without a group).
    /// Why positions were set again after the start, the first few (a rejoin of the group, an
    /// offset out of range): records read again after one are expected, at least once.
    pub fn resets(&self) -> &[String] {
        &self.resets
    }

    fn note_reset(&mut self, why: String) {
        if self.resets.len() < RESETS_KEPT {
            self.resets.push(why);
        }
    }

    pub fn commit(&mut self, client: &mut Client) -> Result<(), ClientError> {
        let Some(group) = self.group.clone() else {
            return Ok(());
        };
        self.settle(client)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A record batch header (v2) with `base` and `last_delta`, and `body` bytes after it.
    fn batch(base: i64, last_delta: i32, body: usize) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&base.to_be_bytes());
        b.extend_from_slice(&((49 + body) as i32).to_be_bytes());
        b.extend_from_slice(&[0; 4]); // partition leader epoch
        b.push(2); // magic
        b.extend_from_slice(&[0; 4]); // crc
        b.extend_from_slice(&[0; 2]); // attributes
        b.extend_from_slice(&last_delta.to_be_bytes());
        b.resize(12 + 49 + body, 0);
        b
    }

    #[test]
    fn next_offset_comes_from_the_last_whole_batch() {
        assert_eq!(next_offset_after(&[]), None);
        let mut set = batch(100, 9, 30);
        assert_eq!(next_offset_after(&set), Some(110));
        set.extend(batch(110, 0, 5));
        assert_eq!(next_offset_after(&set), Some(111));
        // A batch cut by the fetch's byte limit is not counted.
        let whole = set.len();
        set.extend(batch(111, 4, 100));
        set.truncate(whole + 40);
        assert_eq!(next_offset_after(&set), Some(111));
        assert_eq!(next_offset_after(&set[whole..]), None);
    }

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
