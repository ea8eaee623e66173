//! The cluster metadata image: what the committed metadata log says, applied in log order.
//! Every broker holds one and publishes snapshots of it to its shards. Applying is
//! deterministic: the same log gives the same image (and the same refusals) everywhere.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use super::records::{
    BrokerId, BrokerRegistration, MetadataRecord, PartitionAssignment, PartitionState, TopicId,
    NO_LEADER,
};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BrokerState {
    pub registration: BrokerRegistration,
    /// The log index of its registration.
    pub epoch: u64,
    pub fenced: bool,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    pub assignment: PartitionAssignment,
    pub state: PartitionState,
    /// A reassignment under way: the replicas the partition moves to. Meanwhile its replicas
    /// are the old ones and these; once all of these are in sync, the controller drops the
    /// others.
    pub target: Option<Vec<BrokerId>>,
    /// While a reassignment is under way: the replicas it started from, which a cancelled
    /// one returns to.
    pub original: Option<Vec<BrokerId>>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub id: TopicId,
    pub configs: Vec<(String, String)>,
    pub partitions: Vec<PartitionImage>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterImage {
    pub cluster_id: Option<[u8; 16]>,
    pub brokers: BTreeMap<BrokerId, BrokerState>,
    pub topics: BTreeMap<TopicId, TopicImage>,
    pub names: BTreeMap<String, TopicId>,
    pub producer_id_block_end: i64,
    /// The log index of the last record applied.
    pub applied_index: u64,
}

/// Why a committed record changed nothing: the state it expected is gone. Every broker
/// refuses it the same way; the requester learns it from the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("the cluster is already bootstrapped")]
    AlreadyBootstrapped,
    #[error("not bootstrapped yet")]
    NotBootstrapped,
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("broker {broker_id} epoch {got} is not its current epoch {current}")]
    StaleBrokerEpoch {
        broker_id: BrokerId,
        got: u64,
        current: u64,
    },
    #[error("topic {0} exists")]
    TopicExists(String),
    #[error("unknown topic id")]
    UnknownTopic,
    #[error("unknown partition {0}")]
    UnknownPartition(u32),
    #[error("partition epoch {got} is not the current {current}")]
    StalePartitionEpoch { got: i32, current: i32 },
    #[error("invalid partition state: {0}")]
    InvalidState(&'static str),
}

impl ClusterImage {
    /// The image as a metadata snapshot's data.
    pub fn encode(&self) -> Vec<u8> {
        match rkyv::to_bytes::<rkyv::rancor::Error>(self) {
            Ok(bytes) => bytes.to_vec(),
            // Serializing plain owned data into a growable buffer cannot fail.
            Err(e) => unreachable!("rkyv serialization of the cluster image: {e}"),
        }
    }

    /// Decodes [`encode`](Self::encode)'s bytes, checked (they come from peers and disk).
    pub fn decode(bytes: &[u8]) -> Result<Self, super::records::DecodeError> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<ClusterImage, rkyv::rancor::Error>(&aligned)
            .map_err(|e| super::records::DecodeError::new(e.to_string()))
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(self.names.get(name)?)
    }

    pub fn partition(&self, topic: &TopicId, partition: u32) -> Option<&PartitionImage> {
        self.topics.get(topic)?.partitions.get(partition as usize)
    }

    /// Registered brokers that are not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerState> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    pub fn is_live(&self, broker: BrokerId) -> bool {
        self.brokers.get(&broker).is_some_and(|b| !b.fenced)
    }

    /// Applies the committed record at log `index`. The index moves on whether or not the
    /// record is refused.
    pub fn apply(&mut self, index: u64, record: &MetadataRecord) -> Result<(), ApplyError> {
        self.applied_index = self.applied_index.max(index);
        if self.cluster_id.is_none() && !matches!(record, MetadataRecord::Bootstrap { .. }) {
            return Err(ApplyError::NotBootstrapped);
        }
        match record {
            MetadataRecord::Bootstrap { cluster_id } => {
                if self.cluster_id.is_some() {
                    return Err(ApplyError::AlreadyBootstrapped);
                }
                self.cluster_id = Some(*cluster_id);
            }
            MetadataRecord::RegisterBroker(reg) => {
                self.brokers.insert(
                    reg.broker_id,
                    BrokerState {
                        registration: reg.clone(),
                        epoch: index,
                        fenced: true,
                    },
                );
            }
            MetadataRecord::FenceBroker {
                broker_id,
                broker_epoch,
            } => self.broker_at_epoch(*broker_id, *broker_epoch)?.fenced = true,
            MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            } => self.broker_at_epoch(*broker_id, *broker_epoch)?.fenced = false,
            MetadataRecord::CreateTopic {
                name,
                topic_id,
                configs,
                partitions,
            } => {
                if self.names.contains_key(name) || self.topics.contains_key(topic_id) {
                    return Err(ApplyError::TopicExists(name.clone()));
                }
                if partitions.iter().any(|p| p.replicas.is_empty()) {
                    return Err(ApplyError::InvalidState("a partition without replicas"));
                }
                let partitions = partitions.iter().map(new_partition).collect();
                self.names.insert(name.clone(), *topic_id);
                self.topics.insert(
                    *topic_id,
                    TopicImage {
                        name: name.clone(),
                        id: *topic_id,
                        configs: configs.clone(),
                        partitions,
                    },
                );
            }
            MetadataRecord::DeleteTopic { topic_id } => {
                let topic = self
                    .topics
                    .remove(topic_id)
                    .ok_or(ApplyError::UnknownTopic)?;
                self.names.remove(&topic.name);
            }
            MetadataRecord::SetTopicConfigs { topic_id, configs } => {
                let topic = self
                    .topics
                    .get_mut(topic_id)
                    .ok_or(ApplyError::UnknownTopic)?;
                topic.configs = configs.clone();
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                expected_partition_epoch,
                state,
                replicas,
            } => {
                let topic = self
                    .topics
                    .get_mut(topic_id)
                    .ok_or(ApplyError::UnknownTopic)?;
                let p = topic
                    .partitions
                    .get_mut(*partition as usize)
                    .ok_or(ApplyError::UnknownPartition(*partition))?;
                if p.state.partition_epoch != *expected_partition_epoch {
                    return Err(ApplyError::StalePartitionEpoch {
                        got: *expected_partition_epoch,
                        current: p.state.partition_epoch,
                    });
                }
                let replicas = replicas.as_ref().unwrap_or(&p.assignment.replicas);
                check_state(&p.state, state, replicas)?;
                if let Some(r) = replicas_change(replicas, &p.assignment.replicas) {
                    if p.target.is_none() {
                        // A reassignment starts (its target follows in the same batch).
                        p.original = Some(p.assignment.replicas.clone());
                    }
                    p.assignment.replicas = r;
                }
                p.state = state.clone();
            }
            MetadataRecord::ReassignTarget {
                topic_id,
                partition,
                target,
            } => {
                let p = self
                    .topics
                    .get_mut(topic_id)
                    .ok_or(ApplyError::UnknownTopic)?
                    .partitions
                    .get_mut(*partition as usize)
                    .ok_or(ApplyError::UnknownPartition(*partition))?;
                if let Some(t) = target {
                    if t.is_empty() || t.iter().any(|r| !p.assignment.replicas.contains(r)) {
                        return Err(ApplyError::InvalidState(
                            "a reassignment's target must be among the replicas",
                        ));
                    }
                }
                if target.is_none() {
                    p.original = None;
                }
                p.target = target.clone();
            }
            MetadataRecord::ProducerIds { block_end } => {
                self.producer_id_block_end = self.producer_id_block_end.max(*block_end);
            }
            MetadataRecord::ProducerIdBlock { start, len, .. } => {
                if *start != self.producer_id_block_end {
                    return Err(ApplyError::InvalidState(
                        "a producer id block must start where the last one ended",
                    ));
                }
                match start.checked_add(*len) {
                    Some(end) if *len > 0 => self.producer_id_block_end = end,
                    _ => {
                        return Err(ApplyError::InvalidState(
                            "a producer id block must hold at least one id below 2^63",
                        ))
                    }
                }
            }
            MetadataRecord::AddPartitions {
                topic_id,
                from,
                partitions,
            } => {
                let topic = self
                    .topics
                    .get_mut(topic_id)
                    .ok_or(ApplyError::UnknownTopic)?;
                if topic.partitions.len() != *from as usize {
                    return Err(ApplyError::InvalidState(
                        "the topic's partition count is no longer the one the change was computed on",
                    ));
                }
                if partitions.is_empty() || partitions.iter().any(|p| p.replicas.is_empty()) {
                    return Err(ApplyError::InvalidState(
                        "partitions to add, each with replicas",
                    ));
                }
                topic
                    .partitions
                    .extend(partitions.iter().map(new_partition));
            }
        }
        Ok(())
    }

    fn broker_at_epoch(
        &mut self,
        broker_id: BrokerId,
        epoch: u64,
    ) -> Result<&mut BrokerState, ApplyError> {
        let b = self
            .brokers
            .get_mut(&broker_id)
            .ok_or(ApplyError::UnknownBroker(broker_id))?;
        if b.epoch != epoch {
            return Err(ApplyError::StaleBrokerEpoch {
                broker_id,
                got: epoch,
                current: b.epoch,
            });
        }
        Ok(b)
    }
}

/// A partition as created: led by its first replica, every replica in sync.
fn new_partition(a: &PartitionAssignment) -> PartitionImage {
    PartitionImage {
        assignment: a.clone(),
        state: PartitionState {
            leader: a.replicas[0],
            leader_epoch: 0,
            isr: a.replicas.clone(),
            partition_epoch: 0,
        },
        target: None,
        original: None,
    }
}

fn replicas_change(new: &[BrokerId], old: &[BrokerId]) -> Option<Vec<BrokerId>> {
    (new != old).then(|| new.to_vec())
}

/// The rules every partition state obeys, whoever computed it: the partition epoch grows, the
/// leader epoch never goes back and grows with every change of leader, the ISR is a non-empty
/// set of replicas, and the leader (if any) is in it.
fn check_state(
    old: &PartitionState,
    new: &PartitionState,
    replicas: &[BrokerId],
) -> Result<(), ApplyError> {
    if new.partition_epoch <= old.partition_epoch {
        return Err(ApplyError::InvalidState("the partition epoch must grow"));
    }
    if new.leader_epoch < old.leader_epoch
        || (new.leader != old.leader && new.leader_epoch == old.leader_epoch)
    {
        return Err(ApplyError::InvalidState(
            "a new leader needs a new leader epoch",
        ));
    }
    if new.isr.is_empty() || new.isr.iter().any(|r| !replicas.contains(r)) {
        return Err(ApplyError::InvalidState(
            "the ISR is a non-empty set of replicas",
        ));
    }
    if new.leader != NO_LEADER && !new.isr.contains(&new.leader) {
        return Err(ApplyError::InvalidState("the leader is in the ISR"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::records::PartitionAssignment;

    fn image_with_partition() -> ClusterImage {
        let mut image = ClusterImage::default();
        image
            .apply(
                1,
                &MetadataRecord::Bootstrap {
                    cluster_id: [1; 16],
                },
            )
            .unwrap();
        image
            .apply(
                2,
                &MetadataRecord::CreateTopic {
                    name: "t".into(),
                    topic_id: [2; 16],
                    configs: vec![],
                    partitions: vec![PartitionAssignment {
                        replicas: vec![1, 2, 3],
                        shard: 0,
                    }],
                },
            )
            .unwrap();
        image
    }

    fn change(
        expected: i32,
        leader: BrokerId,
        leader_epoch: i32,
        isr: &[BrokerId],
    ) -> MetadataRecord {
        MetadataRecord::PartitionChange {
            topic_id: [2; 16],
            partition: 0,
            expected_partition_epoch: expected,
            state: PartitionState {
                leader,
                leader_epoch,
                isr: isr.to_vec(),
                partition_epoch: expected + 1,
            },
            replicas: None,
        }
    }

    #[test]
    fn of_two_changes_computed_from_one_state_only_the_first_applies() {
        let mut image = image_with_partition();
        // Two controllers (or a controller and a stale request) elect different leaders
        // from partition epoch 0: the second must not make a second leader of epoch 1.
        assert_eq!(image.apply(3, &change(0, 2, 1, &[2, 3])), Ok(()));
        assert_eq!(
            image.apply(4, &change(0, 3, 1, &[3])),
            Err(ApplyError::StalePartitionEpoch { got: 0, current: 1 })
        );
        let s = &image.partition(&[2; 16], 0).unwrap().state;
        assert_eq!((s.leader, s.leader_epoch, s.partition_epoch), (2, 1, 1));
    }

    #[test]
    fn a_partition_state_that_breaks_the_rules_is_refused() {
        let mut image = image_with_partition();
        let bad = [
            change(0, 2, 0, &[2]),    // a new leader in the same epoch
            change(0, 1, 0, &[]),     // an empty ISR
            change(0, 1, 0, &[1, 9]), // an ISR member that is no replica
            change(0, 2, 1, &[1, 3]), // a leader outside the ISR
        ];
        for (i, r) in bad.iter().enumerate() {
            assert!(
                matches!(
                    image.apply(3 + i as u64, r),
                    Err(ApplyError::InvalidState(_))
                ),
                "{r:?}"
            );
        }
        assert_eq!(
            image.partition(&[2; 16], 0).unwrap().state.partition_epoch,
            0
        );
        assert_eq!(
            image.apply(10, &MetadataRecord::DeleteTopic { topic_id: [9; 16] }),
            Err(ApplyError::UnknownTopic)
        );
    }

    #[test]
    fn nothing_applies_before_the_bootstrap_and_it_applies_once() {
        let mut image = ClusterImage::default();
        assert_eq!(
            image.apply(1, &MetadataRecord::ProducerIds { block_end: 1 }),
            Err(ApplyError::NotBootstrapped)
        );
        image
            .apply(
                2,
                &MetadataRecord::Bootstrap {
                    cluster_id: [1; 16],
                },
            )
            .unwrap();
        assert_eq!(
            image.apply(
                3,
                &MetadataRecord::Bootstrap {
                    cluster_id: [2; 16]
                }
            ),
            Err(ApplyError::AlreadyBootstrapped)
        );
        assert_eq!(image.cluster_id, Some([1; 16]));
    }

    #[test]
    fn producer_id_blocks_follow_each_other_and_a_raced_one_is_refused() {
        let mut image = ClusterImage::default();
        image
            .apply(
                1,
                &MetadataRecord::Bootstrap {
                    cluster_id: [1; 16],
                },
            )
            .unwrap();
        let block = |broker_id, start, len| MetadataRecord::ProducerIdBlock {
            broker_id,
            start,
            len,
        };
        assert_eq!(image.apply(2, &block(1, 0, 1000)), Ok(()));
        // Another controller proposed the same block for broker 2 before it saw broker 1's.
        assert!(image.apply(3, &block(2, 0, 1000)).is_err());
        assert_eq!(image.producer_id_block_end, 1000);
        assert!(image.apply(4, &block(2, 2000, 1000)).is_err());
        assert!(image.apply(5, &block(2, 1000, 0)).is_err());
        assert!(image.apply(6, &block(2, 1000, i64::MAX)).is_err());
        assert_eq!(image.apply(7, &block(2, 1000, 1000)), Ok(()));
        assert_eq!(image.producer_id_block_end, 2000);
    }
}
