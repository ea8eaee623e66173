//! The records of the cluster metadata log (KRaft's metadata records, in Spate's shape): each
//! committed entry of the metadata quorum's Raft log holds one, rkyv-encoded. Applying them in
//! log order to an empty [`ClusterImage`](super::ClusterImage) gives every broker the same
//! image.
//!
//! The controller computes each record from the image as it was committed, and a record that
//! changes existing state says which state it expects (a broker epoch, a partition epoch): two
//! controllers racing, or a request computed against an image that has moved since, produce a
//! record that is refused at apply, identically on every broker. So nothing depends on what a
//! controller had proposed but not yet seen committed.

use rkyv::{Archive, Deserialize, Serialize};

pub type BrokerId = i32;
pub type TopicId = [u8; 16];

/// No leader (every replica that could lead is fenced).
pub const NO_LEADER: BrokerId = -1;

/// A listener a broker serves Kafka clients on.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub broker_id: BrokerId,
    /// Random per process start: a second process claiming a live broker's id is refused.
    pub incarnation: [u8; 16],
    /// Where Kafka clients reach it.
    pub listener: Endpoint,
    /// Where other brokers reach it (replication, the quorum).
    pub cluster_addr: String,
    /// Its shard count: replicas of a partition sit on the same shard index when counts
    /// match.
    pub shards: u32,
    /// The port of each shard's replication listener (at the host of `cluster_addr`).
    pub replication_ports: Vec<u16>,
    pub rack: Option<String>,
}

/// One partition's replicas and where it sits, as created or reassigned.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionAssignment {
    /// In preference order: the first is the preferred leader.
    pub replicas: Vec<BrokerId>,
    /// The shard index on every replica (taken modulo a broker's own count if it has fewer).
    pub shard: u32,
}

/// The leadership state of a partition after a change.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub isr: Vec<BrokerId>,
    /// Bumped by every change of this state; an AlterPartition names the epoch it applies to.
    pub partition_epoch: i32,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// The first record of a cluster's log: the cluster id stamped into every data dir.
    Bootstrap {
        cluster_id: [u8; 16],
    },
    /// A broker (re)registers; its broker epoch is the log index of this record. It starts
    /// fenced until it has caught up with the metadata log and heartbeats.
    RegisterBroker(BrokerRegistration),
    /// A broker missed its heartbeats (or shut down): it leads nothing and is in no ISR.
    FenceBroker {
        broker_id: BrokerId,
        broker_epoch: u64,
    },
    /// A registered broker caught up and heartbeats: it may lead and join ISRs.
    UnfenceBroker {
        broker_id: BrokerId,
        broker_epoch: u64,
    },
    CreateTopic {
        name: String,
        topic_id: TopicId,
        configs: Vec<(String, String)>,
        partitions: Vec<PartitionAssignment>,
    },
    DeleteTopic {
        topic_id: TopicId,
    },
    /// A topic's dynamic configs, replaced as a whole.
    SetTopicConfigs {
        topic_id: TopicId,
        configs: Vec<(String, String)>,
    },
    /// A partition's leader, epoch or ISR changed; applies only if the partition's epoch is
    /// still `expected_partition_epoch`.
    PartitionChange {
        topic_id: TopicId,
        partition: u32,
        expected_partition_epoch: i32,
        state: PartitionState,
        /// A reassignment's new replica list, if it changes.
        replicas: Option<Vec<BrokerId>>,
    },
    /// Producer ids below this may have been handed out.
    ProducerIds {
        block_end: i64,
    },
    /// A reassignment of a partition starts (the target replicas, already added to its
    /// replicas by a `PartitionChange` in the same batch) or ends (`None`).
    ReassignTarget {
        topic_id: TopicId,
        partition: u32,
        target: Option<Vec<BrokerId>>,
    },
    /// A topic grows (CreatePartitions): `partitions` are numbered from `from`, and the
    /// record applies only if the topic still has `from` partitions. Each starts led by its
    /// first replica with every replica in sync, as a new topic's do.
    AddPartitions {
        topic_id: TopicId,
        from: u32,
        partitions: Vec<PartitionAssignment>,
    },
    /// A block of producer ids, `[start, start + len)`, handed to one broker for its
    /// InitProducerId answers. It applies only if it starts where the last block ended, so
    /// two proposals raced by two controllers cannot both hand out the same ids.
    ProducerIdBlock {
        broker_id: BrokerId,
        start: i64,
        len: i64,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("metadata record does not decode: {0}")]
pub struct DecodeError(String);

impl DecodeError {
    pub(crate) fn new(why: String) -> Self {
        DecodeError(why)
    }
}

impl MetadataRecord {
    pub fn encode(&self) -> Vec<u8> {
        match rkyv::to_bytes::<rkyv::rancor::Error>(self) {
            Ok(bytes) => bytes.to_vec(),
            // Serializing plain owned data into a growable buffer cannot fail.
            Err(e) => unreachable!("rkyv serialization of a metadata record: {e}"),
        }
    }

    /// Decodes [`encode`](Self::encode)'s bytes, checked (they come from peers and disk).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<MetadataRecord, rkyv::rancor::Error>(&aligned)
            .map_err(|e| DecodeError(e.to_string()))
    }
}

/// The records one proposal carries: one Raft entry, applied together (a fencing and the
/// elections it causes commit as one).
pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
    match rkyv::to_bytes::<rkyv::rancor::Error>(&records.to_vec()) {
        Ok(bytes) => bytes.to_vec(),
        Err(e) => unreachable!("rkyv serialization of metadata records: {e}"),
    }
}

/// Decodes [`encode_batch`]'s bytes, checked.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, DecodeError> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<Vec<MetadataRecord>, rkyv::rancor::Error>(&aligned)
        .map_err(|e| DecodeError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let r = MetadataRecord::CreateTopic {
            name: "orders".into(),
            topic_id: [7; 16],
            configs: vec![("retention.ms".into(), "1000".into())],
            partitions: vec![PartitionAssignment {
                replicas: vec![1, 2, 3],
                shard: 1,
            }],
        };
        assert_eq!(MetadataRecord::decode(&r.encode()), Ok(r));
        assert!(MetadataRecord::decode(&[0xff; 7]).is_err());
        assert!(MetadataRecord::decode(&[]).is_err());
        let batch = vec![
            MetadataRecord::ProducerIds { block_end: 5 },
            MetadataRecord::DeleteTopic { topic_id: [1; 16] },
            MetadataRecord::AddPartitions {
                topic_id: [2; 16],
                from: 3,
                partitions: vec![PartitionAssignment {
                    replicas: vec![2, 3],
                    shard: 0,
                }],
            },
        ];
        assert_eq!(decode_batch(&encode_batch(&batch)), Ok(batch));
        assert!(decode_batch(&[1, 2, 3]).is_err());
    }
}
