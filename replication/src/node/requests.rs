//! What the Kafka side asks of the cluster (creating and deleting topics, ISR changes,
//! reassignments, elections, topic configs, partitions added, producer ids), and the answers.
//! A broker that is not the controller forwards the request to the one it knows; the
//! controller proposes the records and answers once they are committed and applied (from the
//! image then, since a raced record may have been refused).

use rkyv::{Archive, Deserialize, Serialize};

use crate::metadata::{BrokerId, TopicId};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Request {
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i32,
        /// Explicit replica lists, one per partition.
        assignment: Option<Vec<Vec<BrokerId>>>,
        configs: Vec<(String, String)>,
    },
    DeleteTopic {
        name: String,
    },
    /// A partition leader's ISR change. The node that sends it fills in its own broker id
    /// and epoch.
    AlterPartition {
        broker_id: BrokerId,
        broker_epoch: u64,
        topic_id: TopicId,
        partition: u32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<BrokerId>,
    },
    /// AlterPartitionReassignments for one partition (`None`: cancel).
    Reassign {
        topic: String,
        partition: u32,
        target: Option<Vec<BrokerId>>,
    },
    /// ElectLeaders for one partition: preferred (`unclean: false`) or unclean.
    ElectLeader {
        topic: String,
        partition: u32,
        unclean: bool,
    },
    /// AlterConfigs or IncrementalAlterConfigs for a topic: its whole set of overrides
    /// after the change, validated by the broker that received the Kafka request.
    SetTopicConfigs {
        topic: String,
        configs: Vec<(String, String)>,
    },
    /// CreatePartitions for a topic: `total` partitions in all, the new ones placed by the
    /// controller or by `assignment` (one replica list per new partition).
    AddPartitions {
        topic: String,
        total: i32,
        assignment: Option<Vec<Vec<BrokerId>>>,
    },
    /// A block of producer ids for this broker's InitProducerId answers (Kafka's
    /// AllocateProducerIds). The node that sends it fills in its own broker id.
    AllocateProducerIds {
        broker_id: BrokerId,
    },
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    TopicCreated {
        topic_id: TopicId,
    },
    TopicDeleted {
        topic_id: TopicId,
    },
    /// The partition's state moved past the epoch the change applied to (to this change's
    /// outcome, or another's): the leader reads which from the image.
    PartitionChanged {
        partition_epoch: i32,
    },
    Refused(RequestError),
    /// The topic's configs are set; the controller had applied the metadata log up to
    /// `applied_index` (at or past the change) when it answered.
    TopicConfigsSet {
        applied_index: u64,
    },
    /// The topic has the partitions asked for; as [`Reply::TopicConfigsSet`], the index the
    /// controller had applied.
    PartitionsAdded {
        applied_index: u64,
    },
    /// Producer ids `[start, start + len)` are this broker's, and no other's, for ever.
    ProducerIds {
        start: i64,
        len: i64,
    },
}

/// Why a request failed; each is a Kafka error code ([`RequestError::kafka_code`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no controller is known yet (the metadata quorum has no leader); retry")]
    NotController,
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("the controller did not answer within {0} ms; retry")]
    Timeout(u64),
    #[error("{0}")]
    Other(String),
    #[error("{0}")]
    ElectionNotNeeded(String),
    #[error("{0}")]
    PreferredLeaderNotAvailable(String),
    #[error("{0}")]
    EligibleLeadersNotAvailable(String),
    #[error("{0}")]
    NoReassignmentInProgress(String),
}

impl RequestError {
    pub fn kafka_code(&self) -> i16 {
        match self {
            RequestError::NotController => 41,
            RequestError::TopicExists(_) => 36,
            RequestError::UnknownTopic(_) => 3,
            RequestError::InvalidReplicationFactor(_) => 38,
            RequestError::InvalidReplicaAssignment(_) => 39,
            RequestError::InvalidPartitions(_) => 37,
            RequestError::Timeout(_) => 7,
            RequestError::Other(_) => -1,
            RequestError::ElectionNotNeeded(_) => 84,
            RequestError::PreferredLeaderNotAvailable(_) => 80,
            RequestError::EligibleLeadersNotAvailable(_) => 83,
            RequestError::NoReassignmentInProgress(_) => 85,
        }
    }
}

impl From<crate::controller::ControllerError> for RequestError {
    fn from(e: crate::controller::ControllerError) -> Self {
        use crate::controller::election::ElectionRefusal as R;
        use crate::controller::{ControllerError as E, PlacementError as P};
        match e {
            E::TopicExists(name) => RequestError::TopicExists(name),
            E::Placement(p @ P::InvalidReplicationFactor { .. }) => {
                RequestError::InvalidReplicationFactor(p.to_string())
            }
            E::Placement(p @ P::InvalidReplicaAssignment(_)) => {
                RequestError::InvalidReplicaAssignment(p.to_string())
            }
            E::Placement(p @ P::InvalidPartitions(_)) => {
                RequestError::InvalidPartitions(p.to_string())
            }
            E::NotBootstrapped => RequestError::NotController,
            E::UnknownTopicOrPartition => RequestError::UnknownTopic(String::new()),
            E::Election(r @ R::NotNeeded(_)) => RequestError::ElectionNotNeeded(r.to_string()),
            E::Election(r @ R::PreferredNotAvailable(_)) => {
                RequestError::PreferredLeaderNotAvailable(r.to_string())
            }
            E::Election(r @ R::EligibleNotAvailable) => {
                RequestError::EligibleLeadersNotAvailable(r.to_string())
            }
            E::NoReassignmentInProgress(m) => RequestError::NoReassignmentInProgress(m),
            other => RequestError::Other(other.to_string()),
        }
    }
}
