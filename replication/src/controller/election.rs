//! The state a partition should have, given which brokers are live: Kafka's election rules.
//!
//! - Fenced brokers leave the ISR, except the last member, which stays so that the partition
//!   knows whose return brings it back without loss.
//! - A fenced (or absent) leader is replaced by the first replica, in preference order, that
//!   is live and in the ISR, with a new leader epoch. If there is none the partition is
//!   offline (no leader), unless unclean election is allowed: then the first live replica
//!   leads with an ISR of itself, and what only the ISR had is lost (Kafka's
//!   `unclean.leader.election.enable`).
//! - With `preferred` set, a live in-sync preferred replica (the first) takes the leadership
//!   back (Kafka's `auto.leader.rebalance.enable`).
//!
//! [`requested_state`] is the same rules asked for by an operator (ElectLeaders): a preferred
//! election, or an unclean one for a partition that has no live leader.

use crate::metadata::{BrokerId, ClusterImage, PartitionImage, PartitionState, NO_LEADER};

/// The new state for `p`, or `None` if it is already right.
pub fn desired_state(
    image: &ClusterImage,
    p: &PartitionImage,
    unclean: bool,
    preferred: bool,
) -> Option<PartitionState> {
    let replicas = &p.assignment.replicas;
    let old = &p.state;
    let live_isr: Vec<BrokerId> = old
        .isr
        .iter()
        .copied()
        .filter(|r| image.is_live(*r))
        .collect();
    let leader_live = old.leader != NO_LEADER && image.is_live(old.leader);
    let first_live_in_isr = replicas.iter().copied().find(|r| live_isr.contains(r));

    let (leader, isr) = if leader_live {
        let wanted = match first_live_in_isr {
            Some(pref) if preferred && pref == replicas[0] => pref,
            _ => old.leader,
        };
        (wanted, live_isr)
    } else if let Some(leader) = first_live_in_isr {
        (leader, live_isr)
    } else if let Some(leader) = unclean
        .then(|| replicas.iter().copied().find(|r| image.is_live(*r)))
        .flatten()
    {
        (leader, vec![leader])
    } else {
        // Offline: keep the last members of the ISR (all fenced) as they were.
        (NO_LEADER, old.isr.clone())
    };
    if leader == old.leader && same_set(&isr, &old.isr) {
        return None;
    }
    Some(PartitionState {
        leader_epoch: if leader == old.leader {
            old.leader_epoch
        } else {
            old.leader_epoch + 1
        },
        leader,
        isr,
        partition_epoch: old.partition_epoch + 1,
    })
}

/// Why an ElectLeaders election changes nothing (Kafka's per-partition errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElectionRefusal {
    /// The preferred replica leads already (preferred), or a live leader does (unclean).
    #[error("the partition's leader need not change: {0}")]
    NotNeeded(&'static str),
    #[error("the preferred replica {0} is not live and in sync")]
    PreferredNotAvailable(BrokerId),
    #[error("no replica of the partition is live")]
    EligibleNotAvailable,
}

/// The state an ElectLeaders election gives `p`. Preferred: the first replica leads, if it
/// is live and in the ISR (the ISR stays as it is). Unclean: only for a partition whose
/// leader is not live; the first live ISR member in replica order if there is one (a clean
/// election, as the controller makes by itself), else the first live replica, with an ISR of
/// itself (what only the ISR had is lost).
pub fn requested_state(
    image: &ClusterImage,
    p: &PartitionImage,
    unclean: bool,
) -> Result<PartitionState, ElectionRefusal> {
    let replicas = &p.assignment.replicas;
    let old = &p.state;
    let (leader, isr) = if !unclean {
        let Some(&preferred) = replicas.first() else {
            return Err(ElectionRefusal::EligibleNotAvailable);
        };
        if old.leader == preferred {
            return Err(ElectionRefusal::NotNeeded("the preferred replica leads"));
        }
        if !image.is_live(preferred) || !old.isr.contains(&preferred) {
            return Err(ElectionRefusal::PreferredNotAvailable(preferred));
        }
        (preferred, old.isr.clone())
    } else {
        if old.leader != NO_LEADER && image.is_live(old.leader) {
            return Err(ElectionRefusal::NotNeeded("a live replica leads"));
        }
        let live_isr: Vec<BrokerId> = old
            .isr
            .iter()
            .copied()
            .filter(|r| image.is_live(*r))
            .collect();
        match replicas.iter().copied().find(|r| live_isr.contains(r)) {
            Some(leader) => (leader, live_isr),
            None => {
                let leader = replicas
                    .iter()
                    .copied()
                    .find(|r| image.is_live(*r))
                    .ok_or(ElectionRefusal::EligibleNotAvailable)?;
                (leader, vec![leader])
            }
        }
    };
    Ok(PartitionState {
        leader,
        leader_epoch: old.leader_epoch + 1,
        isr,
        partition_epoch: old.partition_epoch + 1,
    })
}

fn same_set(a: &[BrokerId], b: &[BrokerId]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{
        BrokerRegistration, BrokerState, Endpoint, PartitionAssignment, PartitionState,
    };

    fn image(live: &[BrokerId], fenced: &[BrokerId]) -> ClusterImage {
        let mut image = ClusterImage::default();
        for (&b, f) in live
            .iter()
            .map(|b| (b, false))
            .chain(fenced.iter().map(|b| (b, true)))
        {
            image.brokers.insert(
                b,
                BrokerState {
                    registration: BrokerRegistration {
                        broker_id: b,
                        incarnation: [0; 16],
                        listener: Endpoint {
                            host: "127.0.0.1".into(),
                            port: 9092,
                        },
                        cluster_addr: String::new(),
                        shards: 1,
                        replication_ports: vec![],
                        rack: None,
                    },
                    epoch: 1,
                    fenced: f,
                },
            );
        }
        image
    }

    fn partition(leader: BrokerId, isr: &[BrokerId]) -> PartitionImage {
        PartitionImage {
            assignment: PartitionAssignment {
                replicas: vec![1, 2, 3],
                shard: 0,
            },
            state: PartitionState {
                leader,
                leader_epoch: 5,
                isr: isr.to_vec(),
                partition_epoch: 9,
            },
            target: None,
            original: None,
        }
    }

    #[test]
    fn a_fenced_leader_is_replaced_from_the_isr_with_a_new_epoch() {
        let s = desired_state(&image(&[2, 3], &[1]), &partition(1, &[1, 3]), false, false)
            .expect("a change");
        assert_eq!((s.leader, s.leader_epoch, s.partition_epoch), (3, 6, 10));
        assert_eq!(s.isr, vec![3]);
    }

    #[test]
    fn a_fenced_follower_leaves_the_isr_without_a_leader_change() {
        let s = desired_state(
            &image(&[1, 3], &[2]),
            &partition(1, &[1, 2, 3]),
            false,
            false,
        )
        .expect("a change");
        assert_eq!((s.leader, s.leader_epoch), (1, 5));
        assert_eq!(s.isr, vec![1, 3]);
    }

    #[test]
    fn without_a_live_isr_member_the_partition_goes_offline_unless_unclean() {
        let img = image(&[2], &[1, 3]);
        let s = desired_state(&img, &partition(1, &[1, 3]), false, false).expect("a change");
        assert_eq!((s.leader, s.leader_epoch), (NO_LEADER, 6));
        assert_eq!(s.isr, vec![1, 3], "the last members stay");
        let s = desired_state(&img, &partition(1, &[1, 3]), true, false).expect("a change");
        assert_eq!((s.leader, s.isr), (2, vec![2]));
    }

    #[test]
    fn an_offline_partition_comes_back_with_its_isr_member() {
        let mut p = partition(NO_LEADER, &[1, 3]);
        p.state.leader_epoch = 6;
        let s = desired_state(&image(&[3], &[1, 2]), &p, false, false).expect("a change");
        assert_eq!((s.leader, s.leader_epoch, s.isr), (3, 7, vec![3]));
    }

    #[test]
    fn the_preferred_leader_takes_back_only_when_asked_and_in_sync() {
        let img = image(&[1, 2, 3], &[]);
        assert_eq!(
            desired_state(&img, &partition(2, &[1, 2, 3]), false, false),
            None
        );
        let s = desired_state(&img, &partition(2, &[1, 2, 3]), false, true).expect("a change");
        assert_eq!((s.leader, s.leader_epoch), (1, 6));
        assert_eq!(
            desired_state(&img, &partition(2, &[2, 3]), false, true),
            None
        );
    }
}
