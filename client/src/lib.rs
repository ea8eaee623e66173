//! spate-client: a small blocking Kafka client, enough for the command line (`spate topic|
//! produce|consume|group`), spate-bench and the tests. It speaks to any Kafka-compatible
//! broker: it negotiates versions with ApiVersions, follows Metadata to partition leaders and
//! FindCoordinator to group coordinators, and encodes and decodes record batches with any
//! codec.
//!
//! It depends on no other Spate crate: it builds without the broker. The broker (spate-net)
//! uses one piece of it, [`decompress`], the bounded decoder of record batches, so that
//! every decode of records in Spate goes through the same bound.

mod connection;
mod consumer;
pub mod decompress;
mod partitioner;
mod plain_batch;
mod producer;

pub use connection::{ClientError, Connection};
pub use consumer::{
    decode_records, next_offset_after, Consumed, GroupConsumer, InFlightFetch, PartitionFetch,
    StartAt, MAX_DECOMPRESSED_BATCH,
};
pub use partitioner::{murmur2, murmur2_partition};
pub use producer::{
    encode_batch, encode_general, produce_body, produce_request, Acks, InFlightProduce, OutRecord,
    PRODUCE_ENCODED_MAX,
};

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

pub(crate) fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A topic as Metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub error: i16,
    pub internal: bool,
    /// (partition, leader broker id)
    pub partitions: Vec<(i32, i32)>,
    /// Per partition, in the order of `partitions`: its replicas.
    pub replicas: Vec<PartitionReplicas>,
}

/// A partition's replicas as Metadata describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplicas {
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

/// A cluster client: the bootstrap connection plus one connection per broker, opened on demand.
pub struct Client {
    bootstrap: String,
    client_id: String,
    timeout: Duration,
    brokers: HashMap<i32, String>,
    conns: HashMap<String, Connection>,
    /// Topic metadata for producing, and when it was fetched.
    topics: HashMap<String, (TopicInfo, Instant)>,
    /// Produce requests sent and not yet answered; while there are any, the cached metadata
    /// is used as it is (a Metadata call would interleave with their responses).
    in_flight: usize,
    /// Counts resets: a request sent in an earlier epoch will never be answered.
    epoch: u64,
}

/// How long cached topic metadata is used before it is asked again (Kafka's
/// `metadata.max.age.ms` is 5 minutes; shorter here, so added partitions are seen soon).
const METADATA_MAX_AGE: Duration = Duration::from_secs(10);

/// The Kafka name of an error code.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        None => "NONE".into(),
        Some(e) => format!("{e:?} ({code})"),
    }
}

/// COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR: ask again.
pub fn is_coordinator_retriable(code: i16) -> bool {
    matches!(code, 14..=16)
}

impl Client {
    pub fn new(bootstrap: &str, client_id: &str, timeout: Duration) -> Result<Self, ClientError> {
        let mut c = Self {
            bootstrap: bootstrap.to_string(),
            client_id: client_id.to_string(),
            timeout,
            brokers: HashMap::new(),
            conns: HashMap::new(),
            topics: HashMap::new(),
            in_flight: 0,
            epoch: 0,
        };
        c.conn_to(bootstrap)?;
        Ok(c)
    }

    fn conn_to(&mut self, addr: &str) -> Result<&mut Connection, ClientError> {
        if !self.conns.contains_key(addr) {
            let c = Connection::connect(addr, &self.client_id, self.timeout)?;
            self.conns.insert(addr.to_string(), c);
        }
        self.conns
            .get_mut(addr)
            .ok_or_else(|| ClientError::Protocol("connection vanished".into()))
    }

    /// The bootstrap connection (any broker answers metadata and admin requests).
    pub fn any(&mut self) -> Result<&mut Connection, ClientError> {
        let b = self.bootstrap.clone();
        self.conn_to(&b)
    }

    /// A connection to broker `id`, as the last Metadata named it.
    pub fn broker(&mut self, id: i32) -> Result<&mut Connection, ClientError> {
        let addr = match self.brokers.get(&id) {
            Some(a) => a.clone(),
            None => {
                self.metadata(Some(&[]))?;
                self.brokers.get(&id).cloned().ok_or_else(|| {
                    ClientError::Protocol(format!("broker {id} is not in the cluster metadata"))
                })?
            }
        };
        self.conn_to(&addr)
    }

    /// Drops every connection (and what was in flight on them) and the cached metadata, so
    /// the next call reconnects and asks again.
    pub fn reset(&mut self) {
        self.conns.clear();
        self.topics.clear();
        self.in_flight = 0;
        self.epoch += 1;
    }

    /// How many times the client was reset (see [`Client::reset`]).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The topic's partitions for producing: from the cache while it is fresh or while
    /// requests are in flight, else asked (creating the topic if the broker allows).
    pub(crate) fn producing_topic(&mut self, name: &str) -> Result<TopicInfo, ClientError> {
        if let Some((info, at)) = self.topics.get(name) {
            if self.in_flight > 0 || at.elapsed() < METADATA_MAX_AGE {
                return Ok(info.clone());
            }
        }
        let info = self.topic(name, true)?;
        self.topics
            .insert(name.to_string(), (info.clone(), Instant::now()));
        Ok(info)
    }

    /// Forgets a topic's cached metadata (after an error that says it is stale).
    pub(crate) fn forget_topic(&mut self, name: &str) {
        self.topics.remove(name);
    }

    /// Metadata for `topics` (None: all topics). Creates nothing.
    pub fn metadata(&mut self, topics: Option<&[&str]>) -> Result<Vec<TopicInfo>, ClientError> {
        self.metadata_inner(topics, false)
    }

    /// The ids of the brokers the cluster's Metadata names now (no topics asked).
    pub fn broker_ids(&mut self) -> Result<Vec<i32>, ClientError> {
        let req = MetadataRequest::default().with_topics(Some(Vec::new()));
        let resp: MetadataResponse = self.any()?.call(req, 1, 9)?;
        let mut ids: Vec<i32> = resp.brokers.iter().map(|b| b.node_id.0).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Metadata that lets the broker auto-create the topics named.
    pub fn metadata_creating(&mut self, topics: &[&str]) -> Result<Vec<TopicInfo>, ClientError> {
        self.metadata_inner(Some(topics), true)
    }

    fn metadata_inner(
        &mut self,
        topics: Option<&[&str]>,
        create: bool,
    ) -> Result<Vec<TopicInfo>, ClientError> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|ts| {
                ts.iter()
                    .map(|t| {
                        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                            .with_name(Some(TopicName(sb(t))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(create);
        let resp: MetadataResponse = self.any()?.call(req, 1, 9)?;
        for b in &resp.brokers {
            self.brokers
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        Ok(resp
            .topics
            .iter()
            .map(|t| TopicInfo {
                name: t
                    .name
                    .as_ref()
                    .map(|n| n.0.as_str().to_string())
                    .unwrap_or_default(),
                error: t.error_code,
                internal: t.is_internal,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.leader_id.0))
                    .collect(),
                replicas: t
                    .partitions
                    .iter()
                    .map(|p| PartitionReplicas {
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                    })
                    .collect(),
            })
            .collect())
    }

    /// The topic's partitions, waiting briefly for a just-created topic to have leaders.
    pub fn topic(&mut self, name: &str, create: bool) -> Result<TopicInfo, ClientError> {
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let info = if create {
                self.metadata_creating(&[name])?
            } else {
                self.metadata(Some(&[name]))?
            };
            let t = info
                .into_iter()
                .next()
                .ok_or_else(|| ClientError::Protocol("empty metadata answer".into()))?;
            let ready = t.error == 0
                && !t.partitions.is_empty()
                && t.partitions.iter().all(|(_, l)| *l >= 0);
            if ready {
                return Ok(t);
            }
            // 5: leader not available (topic being created); retry until the deadline.
            if t.error != 5 && t.error != 0 || std::time::Instant::now() >= deadline {
                return Err(ClientError::Kafka {
                    code: if t.error == 0 { 5 } else { t.error },
                    context: format!("topic {name}"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The earliest (-2), latest (-1) or first offset at a timestamp of a partition.
    pub fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        leader: i32,
        at: i64,
    ) -> Result<i64, ClientError> {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(sb(topic)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(at)])]);
        let resp: ListOffsetsResponse = self.broker(leader)?.call(req, 1, 5)?;
        let p = resp
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| ClientError::Protocol("empty ListOffsets answer".into()))?;
        if p.error_code != 0 {
            return Err(ClientError::Kafka {
                code: p.error_code,
                context: format!("{topic}-{partition}"),
            });
        }
        Ok(p.offset)
    }

    /// The group coordinator's connection.
    pub fn coordinator(&mut self, group: &str) -> Result<&mut Connection, ClientError> {
        let req = FindCoordinatorRequest::default()
            .with_key(sb(group))
            .with_key_type(0);
        // A cluster's coordinator may not be there yet (its offsets topic being created, a
        // new leader loading it): retried within the client's timeout.
        let deadline = std::time::Instant::now() + self.timeout;
        let resp = loop {
            let resp: FindCoordinatorResponse = self.any()?.call(req.clone(), 0, 3)?;
            if is_coordinator_retriable(resp.error_code) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            break resp;
        };
        if resp.error_code != 0 {
            return Err(ClientError::Kafka {
                code: resp.error_code,
                context: format!("coordinator of group {group}"),
            });
        }
        let addr = format!("{}:{}", resp.host.as_str(), resp.port);
        self.brokers.insert(resp.node_id.0, addr.clone());
        self.conn_to(&addr)
    }
}
