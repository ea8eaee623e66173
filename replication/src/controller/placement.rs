//! Where a new topic's replicas go, and those of partitions added to a topic (rack-unaware,
//! as Kafka's default without racks): the live
//! brokers in id order, partition p's replicas starting at broker (start + p) and taking the
//! next ones round the ring, so leaders and followers spread evenly. `start` comes from the
//! topic name (crc32), so placement is a pure function of the image and the request.
//! A partition's shard index is the one single-node placement gives (crc32 of the name plus
//! the partition, modulo the smallest shard count among its replicas), so every replica puts
//! it on the same shard when shard counts match.

use crate::metadata::{BrokerId, ClusterImage, PartitionAssignment};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("replication factor {factor} is larger than the {live} live brokers")]
    InvalidReplicationFactor { factor: i32, live: usize },
    #[error("invalid replica assignment: {0}")]
    InvalidReplicaAssignment(String),
    #[error("invalid partition count {0}")]
    InvalidPartitions(i32),
}

pub fn assign(
    image: &ClusterImage,
    topic: &str,
    partitions: i32,
    factor: i32,
) -> Result<Vec<PartitionAssignment>, PlacementError> {
    if partitions < 1 {
        return Err(PlacementError::InvalidPartitions(partitions));
    }
    assign_range(image, topic, 0, partitions as usize, factor)
}

/// Partitions `from..to` of `topic` (those CreatePartitions adds), placed as [`assign`]
/// places them: partition p starts at broker (start + p) round the ring of live brokers.
pub fn assign_range(
    image: &ClusterImage,
    topic: &str,
    from: usize,
    to: usize,
    factor: i32,
) -> Result<Vec<PartitionAssignment>, PlacementError> {
    if to <= from {
        return Err(PlacementError::InvalidPartitions(to as i32));
    }
    let live: Vec<BrokerId> = image
        .live_brokers()
        .map(|b| b.registration.broker_id)
        .collect();
    if factor < 1 || factor as usize > live.len() {
        return Err(PlacementError::InvalidReplicationFactor {
            factor,
            live: live.len(),
        });
    }
    let hash = crc32fast::hash(topic.as_bytes()) as usize;
    let start = hash % live.len();
    let out = (from..to)
        .map(|p| {
            let replicas: Vec<BrokerId> = (0..factor as usize)
                .map(|i| live[(start + p + i) % live.len()])
                .collect();
            PartitionAssignment {
                shard: shard_of(image, &replicas, hash, p),
                replicas,
            }
        })
        .collect();
    Ok(out)
}

/// Checks an explicit assignment (CreateTopics' `assignments`): every list non-empty, of one
/// length, without repeats, of registered brokers.
pub fn explicit(
    image: &ClusterImage,
    topic: &str,
    lists: &[Vec<BrokerId>],
) -> Result<Vec<PartitionAssignment>, PlacementError> {
    let Some(first) = lists.first() else {
        return Err(PlacementError::InvalidReplicaAssignment(
            "no partitions".into(),
        ));
    };
    explicit_from(image, topic, 0, first.len(), lists)
}

/// [`explicit`] for partitions numbered from `from` (CreatePartitions' assignments), each
/// list of `factor` replicas (the topic's replication factor).
pub fn explicit_from(
    image: &ClusterImage,
    topic: &str,
    from: usize,
    factor: usize,
    lists: &[Vec<BrokerId>],
) -> Result<Vec<PartitionAssignment>, PlacementError> {
    let bad = |m: String| Err(PlacementError::InvalidReplicaAssignment(m));
    if lists.is_empty() {
        return bad("no partitions".into());
    }
    let hash = crc32fast::hash(topic.as_bytes()) as usize;
    let mut out = Vec::with_capacity(lists.len());
    for (p, replicas) in (from..).zip(lists) {
        if replicas.is_empty() || replicas.len() != factor {
            return bad(format!(
                "partition {p} has {} replicas, the topic's partitions have {factor}",
                replicas.len(),
            ));
        }
        if let Some(b) = replicas.iter().find(|b| !image.brokers.contains_key(b)) {
            return bad(format!("partition {p}: broker {b} is not registered"));
        }
        if (1..replicas.len()).any(|i| replicas[..i].contains(&replicas[i])) {
            return bad(format!("partition {p} names a broker twice"));
        }
        out.push(PartitionAssignment {
            shard: shard_of(image, replicas, hash, p),
            replicas: replicas.clone(),
        });
    }
    Ok(out)
}

fn shard_of(image: &ClusterImage, replicas: &[BrokerId], hash: usize, p: usize) -> u32 {
    let shards = replicas
        .iter()
        .filter_map(|r| image.brokers.get(r))
        .map(|b| b.registration.shards.max(1))
        .min()
        .unwrap_or(1);
    ((hash + p) % shards as usize) as u32
}
