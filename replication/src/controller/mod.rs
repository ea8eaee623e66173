//! The controller: what the leader of the metadata quorum decides. It turns broker requests
//! (registration, heartbeats, topic creation, ISR changes, elections asked for) and the
//! passing of time (fencing, elections, preferred leaders) into metadata records to propose.
//! It reads only the committed image, so it holds no state a new controller would lack except
//! heartbeat times, and those start afresh (every broker gets a full session timeout) when a
//! node becomes controller, as in KRaft.
//!
//! Sans-I/O: the driver proposes the records returned and answers the requester once they are
//! committed and applied (from the image then, since a raced record may have been refused).

pub mod election;
pub mod placement;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use crate::metadata::{
    BrokerId, BrokerRegistration, ClusterImage, MetadataRecord, PartitionImage, PartitionState,
    TopicId,
};

pub use placement::PlacementError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    /// `broker.session.timeout.ms`: a broker not heard from for this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// `unclean.leader.election.enable`, the broker default (a topic config overrides it).
    pub unclean_leader_election: bool,
    /// `auto.leader.rebalance.enable`.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`, in ms.
    pub leader_imbalance_check_interval_ms: u64,
    /// How long a proposal may stay uncommitted before the same change is proposed again (a
    /// proposal can be lost when the quorum's leadership moves).
    pub retry_ms: u64,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            broker_session_timeout_ms: 9_000,
            unclean_leader_election: false,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval_ms: 300_000,
            retry_ms: 2_000,
        }
    }
}

/// Why the controller refuses a request (each maps to a Kafka error code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControllerError {
    #[error("the cluster is not bootstrapped yet")]
    NotBootstrapped,
    #[error("broker {0} is registered by another live process")]
    DuplicateBrokerRegistration(BrokerId),
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("broker {broker_id}'s epoch {got} is stale (current {current})")]
    StaleBrokerEpoch {
        broker_id: BrokerId,
        got: u64,
        current: u64,
    },
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("unknown topic or partition")]
    UnknownTopicOrPartition,
    #[error("leader epoch {got} is not the partition's {current}")]
    FencedLeaderEpoch { got: i32, current: i32 },
    #[error("broker {0} is not the partition's leader")]
    NotLeader(BrokerId),
    #[error("partition epoch {got} is not the current {current}")]
    InvalidUpdateVersion { got: i32, current: i32 },
    #[error("replica {0} may not join the ISR (fenced, unknown, or not a replica)")]
    IneligibleReplica(BrokerId),
    /// ElectLeaders changes nothing, and why (ELECTION_NOT_NEEDED,
    /// PREFERRED_LEADER_NOT_AVAILABLE, ELIGIBLE_LEADERS_NOT_AVAILABLE).
    #[error(transparent)]
    Election(#[from] election::ElectionRefusal),
    #[error("{0}")]
    NoReassignmentInProgress(String),
}

/// A heartbeat's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub records: Vec<MetadataRecord>,
    /// Whether the broker is (still) fenced in the committed image.
    pub fenced: bool,
}

/// CreateTopics for one topic; the topic id comes from the caller (random in a broker,
/// seeded in a simulation).
#[derive(Debug, Clone)]
pub struct CreateTopic {
    pub name: String,
    pub topic_id: TopicId,
    pub partitions: i32,
    pub replication_factor: i32,
    /// Explicit replica lists, one per partition (then `partitions` and the factor are
    /// taken from them).
    pub assignment: Option<Vec<Vec<BrokerId>>>,
    pub configs: Vec<(String, String)>,
}

/// AlterPartition from a partition's leader.
#[derive(Debug, Clone)]
pub struct AlterPartition {
    pub broker_id: BrokerId,
    pub broker_epoch: u64,
    pub topic_id: TopicId,
    pub partition: u32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
}

type PartitionKey = (TopicId, u32);

#[derive(Debug)]
pub struct Controller {
    config: ControllerConfig,
    heartbeats: BTreeMap<BrokerId, u64>,
    since_ms: u64,
    last_rebalance_ms: u64,
    /// Changes proposed by the tick and not yet seen applied: (expected epoch, when).
    proposed: BTreeMap<PartitionKey, (i32, u64)>,
    fencing: BTreeMap<BrokerId, (u64, u64)>,
}

impl Controller {
    /// This node became the controller at `now_ms`.
    pub fn new(config: ControllerConfig, now_ms: u64) -> Self {
        Controller {
            config,
            heartbeats: BTreeMap::new(),
            since_ms: now_ms,
            last_rebalance_ms: now_ms,
            proposed: BTreeMap::new(),
            fencing: BTreeMap::new(),
        }
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    fn alive(&self, broker: BrokerId, now_ms: u64) -> bool {
        let last = self
            .heartbeats
            .get(&broker)
            .copied()
            .unwrap_or(self.since_ms);
        now_ms.saturating_sub(last) < self.config.broker_session_timeout_ms
    }

    pub fn register(
        &mut self,
        image: &ClusterImage,
        reg: BrokerRegistration,
        now_ms: u64,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if image.cluster_id.is_none() {
            return Err(ControllerError::NotBootstrapped);
        }
        if let Some(b) = image.brokers.get(&reg.broker_id) {
            let other_process = b.registration.incarnation != reg.incarnation;
            if other_process && !b.fenced && self.alive(reg.broker_id, now_ms) {
                return Err(ControllerError::DuplicateBrokerRegistration(reg.broker_id));
            }
        }
        self.heartbeats.insert(reg.broker_id, now_ms);
        let registered = image.brokers.contains_key(&reg.broker_id);
        let mut records = vec![MetadataRecord::RegisterBroker(reg)];
        if registered {
            // A new process under a known id (a restart): it lost whatever it had not
            // synced, so the previous incarnation's leaderships and ISR places go in the
            // same batch, before it can be seen leading an epoch it no longer holds whole.
            let mut view = image.clone();
            let _ = view.apply(view.applied_index + 1, &records[0]);
            records.extend(self.elections(&view, now_ms, false));
        }
        Ok(records)
    }

    /// A heartbeat from `broker_id` at `broker_epoch`, which has applied the metadata log up
    /// to `applied_index`. A fenced broker is unfenced once it has applied its own
    /// registration (it knows the cluster as it was when it joined).
    pub fn heartbeat(
        &mut self,
        image: &ClusterImage,
        broker_id: BrokerId,
        broker_epoch: u64,
        applied_index: u64,
        now_ms: u64,
    ) -> Result<HeartbeatReply, ControllerError> {
        let b = image
            .brokers
            .get(&broker_id)
            .ok_or(ControllerError::UnknownBroker(broker_id))?;
        if b.epoch != broker_epoch {
            return Err(ControllerError::StaleBrokerEpoch {
                broker_id,
                got: broker_epoch,
                current: b.epoch,
            });
        }
        self.heartbeats.insert(broker_id, now_ms);
        let mut records = Vec::new();
        if b.fenced && applied_index >= b.epoch {
            records.push(MetadataRecord::UnfenceBroker {
                broker_id,
                broker_epoch,
            });
        }
        Ok(HeartbeatReply {
            records,
            fenced: b.fenced,
        })
    }

    /// What time alone decides: brokers to fence, partitions whose state no longer fits the
    /// live brokers (elections, ISR removals), and preferred leaders to restore.
    pub fn tick(&mut self, image: &ClusterImage, now_ms: u64) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for b in image.live_brokers() {
            let id = b.registration.broker_id;
            if self.alive(id, now_ms) {
                continue;
            }
            let in_flight = self.fencing.get(&id).is_some_and(|&(epoch, at)| {
                epoch == b.epoch && now_ms.saturating_sub(at) < self.config.retry_ms
            });
            if !in_flight {
                self.fencing.insert(id, (b.epoch, now_ms));
                records.push(MetadataRecord::FenceBroker {
                    broker_id: id,
                    broker_epoch: b.epoch,
                });
            }
        }
        self.fencing.retain(|id, (epoch, _)| {
            image
                .brokers
                .get(id)
                .is_some_and(|b| b.epoch == *epoch && !b.fenced)
        });
        // Elections see the brokers just fenced as fenced: the fence records come first in
        // the batch, so the changes computed here apply on top of them.
        let fenced_view;
        let image = if records.is_empty() {
            image
        } else {
            let mut view = image.clone();
            for r in &records {
                let _ = view.apply(view.applied_index, r);
            }
            fenced_view = view;
            &fenced_view
        };

        let preferred = self.config.auto_leader_rebalance
            && now_ms.saturating_sub(self.last_rebalance_ms)
                >= self.config.leader_imbalance_check_interval_ms;
        if preferred {
            self.last_rebalance_ms = now_ms;
        }
        self.proposed.retain(|(t, p), (epoch, _)| {
            image
                .partition(t, *p)
                .is_some_and(|part| part.state.partition_epoch == *epoch)
        });
        records.extend(self.elections(image, now_ms, preferred));
        records
    }

    /// The partition changes `image` calls for (see [`election`]), except those proposed
    /// within `retry_ms` from the same partition epoch.
    fn elections(
        &mut self,
        image: &ClusterImage,
        now_ms: u64,
        preferred: bool,
    ) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        for (topic_id, topic) in &image.topics {
            let unclean = topic
                .configs
                .iter()
                .find(|(k, _)| k == "unclean.leader.election.enable")
                .map_or(self.config.unclean_leader_election, |(_, v)| v == "true");
            for (i, p) in topic.partitions.iter().enumerate() {
                let key = (*topic_id, i as u32);
                let Some(state) = election::desired_state(image, p, unclean, preferred) else {
                    // A reassignment whose target replicas are all in sync is done.
                    if let Some(done) = reassignment_done(image, p) {
                        if self.proposed.get(&key).is_some_and(|&(epoch, at)| {
                            epoch == p.state.partition_epoch
                                && now_ms.saturating_sub(at) < self.config.retry_ms
                        }) {
                            continue;
                        }
                        self.proposed.insert(key, (p.state.partition_epoch, now_ms));
                        let target = p.target.clone();
                        records.push(MetadataRecord::PartitionChange {
                            topic_id: *topic_id,
                            partition: i as u32,
                            expected_partition_epoch: p.state.partition_epoch,
                            state: done,
                            replicas: target,
                        });
                        records.push(MetadataRecord::ReassignTarget {
                            topic_id: *topic_id,
                            partition: i as u32,
                            target: None,
                        });
                    }
                    continue;
                };
                if let Some(&(epoch, at)) = self.proposed.get(&key) {
                    if epoch == p.state.partition_epoch
                        && now_ms.saturating_sub(at) < self.config.retry_ms
                    {
                        continue;
                    }
                }
                self.proposed.insert(key, (p.state.partition_epoch, now_ms));
                records.push(change(*topic_id, i as u32, p.state.partition_epoch, state));
            }
        }
        records
    }

    pub fn create_topic(
        &self,
        image: &ClusterImage,
        req: CreateTopic,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        if image.cluster_id.is_none() {
            return Err(ControllerError::NotBootstrapped);
        }
        if image.names.contains_key(&req.name) || image.topics.contains_key(&req.topic_id) {
            return Err(ControllerError::TopicExists(req.name));
        }
        let partitions = match &req.assignment {
            Some(lists) => placement::explicit(image, &req.name, lists)?,
            None => placement::assign(image, &req.name, req.partitions, req.replication_factor)?,
        };
        Ok(vec![MetadataRecord::CreateTopic {
            name: req.name,
            topic_id: req.topic_id,
            configs: req.configs,
            partitions,
        }])
    }

    /// DeleteTopics for one topic.
    pub fn delete_topic(
        &self,
        image: &ClusterImage,
        name: &str,
    ) -> Result<(TopicId, Vec<MetadataRecord>), ControllerError> {
        let topic_id = *image
            .names
            .get(name)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        Ok((topic_id, vec![MetadataRecord::DeleteTopic { topic_id }]))
    }

    /// CreatePartitions for one topic: grows it to `total` partitions, the new ones with the
    /// topic's replication factor (that of its first partition), placed as a new topic's
    /// are ([`placement::assign_range`]) or as `assignment` says (one list per new
    /// partition). Returns the topic id and the partition count the change applies to.
    pub fn add_partitions(
        &self,
        image: &ClusterImage,
        name: &str,
        total: i32,
        assignment: Option<Vec<Vec<BrokerId>>>,
    ) -> Result<(TopicId, u32, Vec<MetadataRecord>), ControllerError> {
        let topic = image
            .topic_by_name(name)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        let from = topic.partitions.len();
        if total < 1 || total as usize <= from {
            return Err(ControllerError::Placement(
                PlacementError::InvalidPartitions(total),
            ));
        }
        let factor = topic
            .partitions
            .first()
            .map_or(1, |p| p.assignment.replicas.len());
        let partitions = match assignment {
            Some(lists) => {
                if lists.len() != total as usize - from {
                    return Err(ControllerError::Placement(
                        PlacementError::InvalidReplicaAssignment(format!(
                            "{} replica lists for the {} new partitions",
                            lists.len(),
                            total as usize - from
                        )),
                    ));
                }
                placement::explicit_from(image, name, from, factor, &lists)?
            }
            None => placement::assign_range(image, name, from, total as usize, factor as i32)?,
        };
        Ok((
            topic.id,
            from as u32,
            vec![MetadataRecord::AddPartitions {
                topic_id: topic.id,
                from: from as u32,
                partitions,
            }],
        ))
    }

    /// A topic's configs replaced as a whole (AlterConfigs, IncrementalAlterConfigs): the
    /// values are validated by the broker that took the Kafka request, which knows them.
    pub fn set_topic_configs(
        &self,
        image: &ClusterImage,
        name: &str,
        configs: Vec<(String, String)>,
    ) -> Result<(TopicId, Vec<MetadataRecord>), ControllerError> {
        let topic_id = *image
            .names
            .get(name)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        Ok((
            topic_id,
            vec![MetadataRecord::SetTopicConfigs { topic_id, configs }],
        ))
    }

    /// AlterPartitionReassignments for one partition: its replicas become `target` once
    /// every one of them is in sync. Meanwhile the partition has the old replicas and the
    /// new (target first, in preference order); the new ones copy the log and join the ISR;
    /// then the controller drops the others ([`Controller::tick`]), electing a leader from the
    /// target if the old one is not in it. Cancelling (`None`) returns the partition to the
    /// replicas it started from ([`cancel_reassignment`]).
    pub fn reassign(
        &self,
        image: &ClusterImage,
        topic_id: TopicId,
        partition: u32,
        target: Option<Vec<BrokerId>>,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let p = image
            .partition(&topic_id, partition)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        let Some(target) = target else {
            return cancel_reassignment(image, topic_id, partition, p);
        };
        if target.is_empty() {
            return Err(ControllerError::Placement(
                PlacementError::InvalidReplicaAssignment(
                    "a partition needs at least one replica".into(),
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for b in &target {
            if !seen.insert(*b) {
                return Err(ControllerError::Placement(
                    PlacementError::InvalidReplicaAssignment(format!(
                        "broker {b} is named twice in the new replicas"
                    )),
                ));
            }
            if !image.brokers.contains_key(b) {
                return Err(ControllerError::Placement(
                    PlacementError::InvalidReplicaAssignment(format!(
                        "broker {b} is not registered in this cluster"
                    )),
                ));
            }
        }
        if p.target.is_some() {
            return Err(ControllerError::Placement(
                PlacementError::InvalidReplicaAssignment(
                    "the partition is being reassigned already".into(),
                ),
            ));
        }
        if target == p.assignment.replicas {
            return Ok(Vec::new());
        }
        let mut union = target.clone();
        union.extend(p.assignment.replicas.iter().filter(|r| !target.contains(r)));
        let state = PartitionState {
            partition_epoch: p.state.partition_epoch + 1,
            ..p.state.clone()
        };
        Ok(vec![
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                expected_partition_epoch: p.state.partition_epoch,
                state,
                replicas: Some(union),
            },
            MetadataRecord::ReassignTarget {
                topic_id,
                partition,
                target: Some(target),
            },
        ])
    }

    /// ElectLeaders for one partition: a preferred election (the first replica leads again,
    /// if live and in sync) or an unclean one (a partition without a live leader gets the
    /// first live replica, from the ISR if one is live). See [`election::requested_state`].
    pub fn elect_leader(
        &self,
        image: &ClusterImage,
        topic_id: TopicId,
        partition: u32,
        unclean: bool,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let p = image
            .partition(&topic_id, partition)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        let state = election::requested_state(image, p, unclean)?;
        Ok(vec![change(
            topic_id,
            partition,
            p.state.partition_epoch,
            state,
        )])
    }

    /// A leader's ISR change (Kafka's AlterPartition rules).
    pub fn alter_partition(
        &self,
        image: &ClusterImage,
        req: &AlterPartition,
    ) -> Result<Vec<MetadataRecord>, ControllerError> {
        let b = image
            .brokers
            .get(&req.broker_id)
            .ok_or(ControllerError::UnknownBroker(req.broker_id))?;
        if b.epoch != req.broker_epoch {
            return Err(ControllerError::StaleBrokerEpoch {
                broker_id: req.broker_id,
                got: req.broker_epoch,
                current: b.epoch,
            });
        }
        let p = image
            .partition(&req.topic_id, req.partition)
            .ok_or(ControllerError::UnknownTopicOrPartition)?;
        if req.leader_epoch != p.state.leader_epoch {
            return Err(ControllerError::FencedLeaderEpoch {
                got: req.leader_epoch,
                current: p.state.leader_epoch,
            });
        }
        if req.broker_id != p.state.leader {
            return Err(ControllerError::NotLeader(req.broker_id));
        }
        if req.partition_epoch != p.state.partition_epoch {
            return Err(ControllerError::InvalidUpdateVersion {
                got: req.partition_epoch,
                current: p.state.partition_epoch,
            });
        }
        if !req.new_isr.contains(&req.broker_id) {
            return Err(ControllerError::IneligibleReplica(req.broker_id));
        }
        if let Some(r) = req
            .new_isr
            .iter()
            .find(|r| !p.assignment.replicas.contains(r) || !image.is_live(**r))
        {
            return Err(ControllerError::IneligibleReplica(*r));
        }
        let mut isr = req.new_isr.clone();
        isr.sort_unstable();
        isr.dedup();
        Ok(vec![change(
            req.topic_id,
            req.partition,
            p.state.partition_epoch,
            PartitionState {
                leader: p.state.leader,
                leader_epoch: p.state.leader_epoch,
                isr,
                partition_epoch: p.state.partition_epoch + 1,
            },
        )])
    }
}

/// A cancelled reassignment (Kafka's AlterPartitionReassignments with null replicas): the
/// partition returns to the replicas it started from, its ISR cut to them, led by the same
/// leader if it is one of them, else by the first of them in sync and live (next leader
/// epoch). NO_REASSIGNMENT_IN_PROGRESS without one; refused if none of the original replicas
/// is in sync (the reassignment must then finish).
fn cancel_reassignment(
    image: &ClusterImage,
    topic_id: TopicId,
    partition: u32,
    p: &PartitionImage,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    if p.target.is_none() {
        return Err(ControllerError::NoReassignmentInProgress(format!(
            "partition {partition} is not being reassigned"
        )));
    }
    let original = p
        .original
        .clone()
        .unwrap_or_else(|| p.assignment.replicas.clone());
    let state = narrowed(image, p, &original).ok_or_else(|| {
        ControllerError::Placement(PlacementError::InvalidReplicaAssignment(
            "none of the partition's original replicas is in sync and live: the reassignment \
             cannot be cancelled"
                .into(),
        ))
    })?;
    Ok(vec![
        MetadataRecord::PartitionChange {
            topic_id,
            partition,
            expected_partition_epoch: p.state.partition_epoch,
            state,
            replicas: Some(original),
        },
        MetadataRecord::ReassignTarget {
            topic_id,
            partition,
            target: None,
        },
    ])
}

/// The state that ends a reassignment, once every target replica is in sync.
fn reassignment_done(image: &ClusterImage, p: &PartitionImage) -> Option<PartitionState> {
    let target = p.target.as_ref()?;
    if !target.iter().all(|r| p.state.isr.contains(r)) {
        return None;
    }
    narrowed(image, p, target)
}

/// The partition's state on the replicas `to` only: the ISR cut to them, and a leader from
/// them (the same one if it stays; else the first of them in sync and live, with the next
/// leader epoch; none such: `None`).
fn narrowed(image: &ClusterImage, p: &PartitionImage, to: &[BrokerId]) -> Option<PartitionState> {
    let isr: Vec<BrokerId> = p
        .state
        .isr
        .iter()
        .copied()
        .filter(|r| to.contains(r))
        .collect();
    let (leader, leader_epoch) = if to.contains(&p.state.leader) {
        (p.state.leader, p.state.leader_epoch)
    } else {
        let next = to
            .iter()
            .copied()
            .find(|r| isr.contains(r) && image.is_live(*r))?;
        (next, p.state.leader_epoch + 1)
    };
    Some(PartitionState {
        leader,
        leader_epoch,
        isr,
        partition_epoch: p.state.partition_epoch + 1,
    })
}

fn change(
    topic_id: TopicId,
    partition: u32,
    expected: i32,
    state: PartitionState,
) -> MetadataRecord {
    MetadataRecord::PartitionChange {
        topic_id,
        partition,
        expected_partition_epoch: expected,
        state,
        replicas: None,
    }
}
