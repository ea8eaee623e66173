use super::*;
use crate::metadata::{Endpoint, NO_LEADER};

/// An image and the log index of the next record, records applied as the quorum would.
struct Cluster {
    image: ClusterImage,
    next: u64,
    controller: Controller,
}

impl Cluster {
    fn new() -> Self {
        let mut c = Cluster {
            image: ClusterImage::default(),
            next: 1,
            controller: Controller::new(ControllerConfig::default(), 0),
        };
        c.apply(vec![MetadataRecord::Bootstrap {
            cluster_id: [9; 16],
        }]);
        c
    }

    fn apply(&mut self, records: Vec<MetadataRecord>) {
        for r in records {
            let _ = self.image.apply(self.next, &r);
            self.next += 1;
        }
    }

    fn join(&mut self, id: BrokerId, now: u64) -> u64 {
        let records = self
            .controller
            .register(&self.image, reg(id, [id as u8; 16]), now)
            .expect("registered");
        self.apply(records);
        let epoch = self.image.brokers[&id].epoch;
        let reply = self
            .controller
            .heartbeat(&self.image, id, epoch, self.image.applied_index, now)
            .expect("heartbeat");
        assert!(reply.fenced);
        self.apply(reply.records);
        assert!(self.image.is_live(id));
        epoch
    }

    fn beat(&mut self, id: BrokerId, now: u64) {
        let epoch = self.image.brokers[&id].epoch;
        let reply = self
            .controller
            .heartbeat(&self.image, id, epoch, self.image.applied_index, now)
            .expect("heartbeat");
        self.apply(reply.records);
    }

    fn create(&mut self, name: &str, partitions: i32, rf: i32) -> TopicId {
        let id = [name.len() as u8; 16];
        let records = self
            .controller
            .create_topic(
                &self.image,
                CreateTopic {
                    name: name.into(),
                    topic_id: id,
                    partitions,
                    replication_factor: rf,
                    assignment: None,
                    configs: vec![],
                },
            )
            .expect("created");
        self.apply(records);
        id
    }
}

fn reg(id: BrokerId, incarnation: [u8; 16]) -> BrokerRegistration {
    BrokerRegistration {
        broker_id: id,
        incarnation,
        listener: Endpoint {
            host: "127.0.0.1".into(),
            port: 9092 + id as u16,
        },
        cluster_addr: format!("127.0.0.1:{}", 19092 + id),
        shards: 2,
        replication_ports: vec![],
        rack: None,
    }
}

#[test]
fn replicas_spread_over_live_brokers_and_a_factor_too_large_is_refused() {
    let mut c = Cluster::new();
    for b in 1..=3 {
        c.join(b, 0);
    }
    let t = c.create("orders", 6, 3);
    let topic = &c.image.topics[&t];
    let mut leaders = BTreeMap::new();
    for p in &topic.partitions {
        let mut r = p.assignment.replicas.clone();
        r.sort_unstable();
        assert_eq!(r, vec![1, 2, 3]);
        assert_eq!(p.state.isr.len(), 3);
        assert!(p.assignment.shard < 2);
        *leaders.entry(p.state.leader).or_insert(0) += 1;
    }
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    let err = c
        .controller
        .create_topic(
            &c.image,
            CreateTopic {
                name: "big".into(),
                topic_id: [1; 16],
                partitions: 1,
                replication_factor: 4,
                assignment: None,
                configs: vec![],
            },
        )
        .unwrap_err();
    assert_eq!(
        err,
        ControllerError::Placement(PlacementError::InvalidReplicationFactor { factor: 4, live: 3 })
    );
    let err = c
        .controller
        .create_topic(
            &c.image,
            CreateTopic {
                name: "twice".into(),
                topic_id: [2; 16],
                partitions: 1,
                replication_factor: 1,
                assignment: Some(vec![vec![1, 1]]),
                configs: vec![],
            },
        )
        .unwrap_err();
    assert!(matches!(
        err,
        ControllerError::Placement(PlacementError::InvalidReplicaAssignment(_))
    ));
}

#[test]
fn a_second_live_process_with_the_same_id_is_refused() {
    let mut c = Cluster::new();
    c.join(1, 0);
    let err = c.controller.register(&c.image, reg(1, [0xee; 16]), 100);
    assert_eq!(err, Err(ControllerError::DuplicateBrokerRegistration(1)));
    // Once it has been silent for the session timeout, a restarted process may take over.
    assert!(c
        .controller
        .register(&c.image, reg(1, [0xee; 16]), 20_000)
        .is_ok());
}

#[test]
fn a_silent_leader_is_fenced_and_replaced_in_one_tick() {
    let mut c = Cluster::new();
    for b in 1..=3 {
        c.join(b, 0);
    }
    let t = c.create("t", 3, 3);
    let led_by_1: Vec<usize> = (0..3)
        .filter(|&p| c.image.topics[&t].partitions[p].state.leader == 1)
        .collect();
    assert!(!led_by_1.is_empty());
    // 2 and 3 go on heartbeating; 1 stops.
    for now in (1000..9000).step_by(1000) {
        c.beat(2, now);
        c.beat(3, now);
        let records = c.controller.tick(&c.image, now);
        assert!(records.is_empty(), "nothing to do at {now}: {records:?}");
    }
    c.beat(2, 9500);
    c.beat(3, 9500);
    let records = c.controller.tick(&c.image, 9500);
    assert!(matches!(
        records[0],
        MetadataRecord::FenceBroker { broker_id: 1, .. }
    ));
    assert!(
        c.controller.tick(&c.image, 9600).is_empty(),
        "in flight: not proposed twice"
    );
    c.apply(records);
    assert!(!c.image.is_live(1));
    for (i, p) in c.image.topics[&t].partitions.iter().enumerate() {
        assert!(!p.state.isr.contains(&1), "partition {i}");
        assert_ne!(p.state.leader, 1);
        if led_by_1.contains(&i) {
            assert_eq!(p.state.leader_epoch, 1, "a new leader, a new epoch");
        } else {
            assert_eq!(p.state.leader_epoch, 0, "same leader, same epoch");
        }
    }
    assert!(c.controller.tick(&c.image, 9700).is_empty());
}

#[test]
fn isr_changes_follow_kafkas_alter_partition_rules() {
    let mut c = Cluster::new();
    for b in 1..=3 {
        c.join(b, 0);
    }
    let t = c.create("t", 1, 3);
    let p = c.image.topics[&t].partitions[0].clone();
    let leader = p.state.leader;
    let others: Vec<BrokerId> = p.assignment.replicas[1..].to_vec();
    let req = AlterPartition {
        broker_id: leader,
        broker_epoch: c.image.brokers[&leader].epoch,
        topic_id: t,
        partition: 0,
        leader_epoch: 0,
        partition_epoch: 0,
        new_isr: vec![leader, others[0]],
    };
    let stale = AlterPartition {
        leader_epoch: 1,
        ..req.clone()
    };
    assert!(matches!(
        c.controller.alter_partition(&c.image, &stale),
        Err(ControllerError::FencedLeaderEpoch { got: 1, current: 0 })
    ));
    let not_leader = AlterPartition {
        broker_id: others[0],
        broker_epoch: c.image.brokers[&others[0]].epoch,
        ..req.clone()
    };
    assert_eq!(
        c.controller.alter_partition(&c.image, &not_leader),
        Err(ControllerError::NotLeader(others[0]))
    );
    let outsider = AlterPartition {
        new_isr: vec![leader, 7],
        ..req.clone()
    };
    assert_eq!(
        c.controller.alter_partition(&c.image, &outsider),
        Err(ControllerError::IneligibleReplica(7))
    );
    let records = c.controller.alter_partition(&c.image, &req).expect("valid");
    c.apply(records);
    let state = &c.image.topics[&t].partitions[0].state;
    assert_eq!(state.partition_epoch, 1);
    assert_eq!(state.isr.len(), 2);
    // The same request again names an old partition epoch.
    assert_eq!(
        c.controller.alter_partition(&c.image, &req),
        Err(ControllerError::InvalidUpdateVersion { got: 0, current: 1 })
    );
}

#[test]
fn an_offline_partition_comes_back_when_its_last_isr_member_returns() {
    let mut c = Cluster::new();
    c.join(1, 0);
    c.join(2, 0);
    let t = c.create("t", 1, 1);
    let only = c.image.topics[&t].partitions[0].state.leader;
    let other = if only == 1 { 2 } else { 1 };
    c.beat(other, 9_500);
    let records = c.controller.tick(&c.image, 9_500);
    c.apply(records);
    let state = &c.image.topics[&t].partitions[0].state;
    assert_eq!((state.leader, state.isr.clone()), (NO_LEADER, vec![only]));
    // It comes back: registers again (a new epoch), is unfenced, leads again.
    let records = c
        .controller
        .register(&c.image, reg(only, [0x55; 16]), 12_000)
        .expect("re-register");
    c.apply(records);
    c.beat(only, 12_001);
    assert!(c.image.is_live(only));
    let records = c.controller.tick(&c.image, 12_002);
    c.apply(records);
    let state = &c.image.topics[&t].partitions[0].state;
    assert_eq!((state.leader, state.leader_epoch), (only, 2));
}

#[test]
fn a_stale_broker_epoch_is_refused() {
    let mut c = Cluster::new();
    let epoch = c.join(1, 0);
    assert_eq!(
        c.controller.heartbeat(&c.image, 1, epoch + 100, 0, 1),
        Err(ControllerError::StaleBrokerEpoch {
            broker_id: 1,
            got: epoch + 100,
            current: epoch
        })
    );
    assert_eq!(
        c.controller.heartbeat(&c.image, 5, 1, 0, 1),
        Err(ControllerError::UnknownBroker(5))
    );
}

#[test]
fn a_restarted_leader_loses_its_leaderships_in_its_registration_batch() {
    let mut c = Cluster::new();
    for b in 1..=3 {
        c.join(b, 0);
    }
    let t = c.create("t", 3, 3);
    c.beat(2, 9_000);
    c.beat(3, 9_000);
    // Broker 1 restarted: its lease ran out, and it registers again before any tick
    // fenced it.
    let records = c
        .controller
        .register(&c.image, reg(1, [0x77; 16]), 9_500)
        .expect("the old lease is over");
    assert!(records.len() > 1, "the elections come with it: {records:?}");
    c.apply(records);
    for p in &c.image.topics[&t].partitions {
        assert_ne!(p.state.leader, 1);
        assert!(!p.state.isr.contains(&1));
    }
}

#[test]
fn a_preferred_election_brings_the_first_replica_back_once_it_is_in_sync() {
    use election::ElectionRefusal as R;
    let mut c = Cluster::new();
    for b in 1..=3 {
        c.join(b, 0);
    }
    let t = c.create("t", 1, 3);
    let preferred = c.image.topics[&t].partitions[0].assignment.replicas[0];
    assert_eq!(
        c.controller.elect_leader(&c.image, t, 0, false),
        Err(ControllerError::Election(R::NotNeeded(
            "the preferred replica leads"
        )))
    );
    assert_eq!(
        c.controller.elect_leader(&c.image, t, 1, false),
        Err(ControllerError::UnknownTopicOrPartition)
    );
    // The preferred leader restarts: its leadership and ISR place go with its registration.
    let others: Vec<BrokerId> = (1..=3).filter(|b| *b != preferred).collect();
    for b in &others {
        c.beat(*b, 9_000);
    }
    let records = c
        .controller
        .register(&c.image, reg(preferred, [0x42; 16]), 9_500)
        .expect("re-register");
    c.apply(records);
    let p = &c.image.topics[&t].partitions[0];
    let (leader, epoch) = (p.state.leader, p.state.leader_epoch);
    assert_ne!(leader, preferred);
    // Fenced and out of the ISR: not available.
    assert_eq!(
        c.controller.elect_leader(&c.image, t, 0, false),
        Err(ControllerError::Election(R::PreferredNotAvailable(
            preferred
        )))
    );
    // Unfenced but not caught up yet: still not available.
    c.beat(preferred, 9_600);
    assert!(c.image.is_live(preferred));
    assert!(matches!(
        c.controller.elect_leader(&c.image, t, 0, false),
        Err(ControllerError::Election(R::PreferredNotAvailable(_)))
    ));
    // The leader takes it back into the ISR.
    let p = c.image.topics[&t].partitions[0].clone();
    let mut isr = p.state.isr.clone();
    isr.push(preferred);
    let records = c
        .controller
        .alter_partition(
            &c.image,
            &AlterPartition {
                broker_id: leader,
                broker_epoch: c.image.brokers[&leader].epoch,
                topic_id: t,
                partition: 0,
                leader_epoch: epoch,
                partition_epoch: p.state.partition_epoch,
                new_isr: isr,
            },
        )
        .expect("valid ISR change");
    c.apply(records);
    // An unclean election is not needed while a live replica leads.
    assert!(matches!(
        c.controller.elect_leader(&c.image, t, 0, true),
        Err(ControllerError::Election(R::NotNeeded(_)))
    ));
    let before = c.image.topics[&t].partitions[0].state.clone();
    let records = c
        .controller
        .elect_leader(&c.image, t, 0, false)
        .expect("an election");
    c.apply(records.clone());
    let after = &c.image.topics[&t].partitions[0].state;
    assert_eq!(after.leader, preferred);
    assert_eq!(after.leader_epoch, before.leader_epoch + 1);
    assert_eq!(after.partition_epoch, before.partition_epoch + 1);
    assert_eq!(after.isr, before.isr, "the ISR stays");
    // The same record again (a duplicate, or one raced by another change) is refused at
    // apply: it names the partition epoch it was computed on.
    let mut view = c.image.clone();
    assert!(matches!(
        view.apply(c.next, &records[0]),
        Err(crate::metadata::ApplyError::StalePartitionEpoch { .. })
    ));
}

#[test]
fn an_unclean_election_takes_a_live_replica_only_when_no_isr_member_is_live() {
    use election::ElectionRefusal as R;
    let mut c = Cluster::new();
    for b in 1..=3 {
        c.join(b, 0);
    }
    let t = c.create("t", 1, 3);
    let replicas = c.image.topics[&t].partitions[0].assignment.replicas.clone();
    let (first, second, third) = (replicas[0], replicas[1], replicas[2]);
    // The ISR shrinks to the leader alone, then the leader and the second replica go silent.
    let records = c
        .controller
        .alter_partition(
            &c.image,
            &AlterPartition {
                broker_id: first,
                broker_epoch: c.image.brokers[&first].epoch,
                topic_id: t,
                partition: 0,
                leader_epoch: 0,
                partition_epoch: 0,
                new_isr: vec![first],
            },
        )
        .expect("valid ISR change");
    c.apply(records);
    c.beat(third, 9_500);
    let records = c.controller.tick(&c.image, 9_500);
    c.apply(records);
    let state = c.image.topics[&t].partitions[0].state.clone();
    assert_eq!((state.leader, state.isr.clone()), (NO_LEADER, vec![first]));
    assert!(!c.image.is_live(second));
    // A preferred election cannot help: the first replica is fenced.
    assert_eq!(
        c.controller.elect_leader(&c.image, t, 0, false),
        Err(ControllerError::Election(R::PreferredNotAvailable(first)))
    );
    let records = c
        .controller
        .elect_leader(&c.image, t, 0, true)
        .expect("unclean election");
    c.apply(records);
    let after = &c.image.topics[&t].partitions[0].state;
    assert_eq!((after.leader, after.isr.clone()), (third, vec![third]));
    assert_eq!(after.leader_epoch, state.leader_epoch + 1);
    assert!(matches!(
        c.controller.elect_leader(&c.image, t, 0, true),
        Err(ControllerError::Election(R::NotNeeded(_)))
    ));
    // With no live replica at all, none is eligible.
    let records = c.controller.tick(&c.image, 30_000);
    c.apply(records);
    assert!(c.image.live_brokers().next().is_none());
    assert_eq!(
        c.controller.elect_leader(&c.image, t, 0, true),
        Err(ControllerError::Election(R::EligibleNotAvailable))
    );
}

#[test]
fn a_topics_configs_are_replaced_as_a_whole_and_an_unknown_topic_is_refused() {
    let mut c = Cluster::new();
    c.join(1, 0);
    let t = c.create("t", 1, 1);
    let configs = vec![
        ("retention.ms".to_string(), "60000".to_string()),
        ("min.insync.replicas".to_string(), "1".to_string()),
    ];
    let (id, records) = c
        .controller
        .set_topic_configs(&c.image, "t", configs.clone())
        .expect("a known topic");
    assert_eq!(id, t);
    c.apply(records);
    assert_eq!(c.image.topics[&t].configs, configs);
    // The next set replaces it: a key left out is gone.
    let (_, records) = c
        .controller
        .set_topic_configs(&c.image, "t", vec![("retention.ms".into(), "1000".into())])
        .expect("a known topic");
    c.apply(records);
    assert_eq!(
        c.image.topics[&t].configs,
        vec![("retention.ms".to_string(), "1000".to_string())]
    );
    assert_eq!(
        c.controller.set_topic_configs(&c.image, "nope", vec![]),
        Err(ControllerError::UnknownTopicOrPartition)
    );
}

#[test]
fn partitions_added_to_a_topic_take_its_factor_and_a_raced_addition_is_refused() {
    let mut c = Cluster::new();
    for b in 1..=3 {
        c.join(b, 0);
    }
    let t = c.create("grows", 2, 2);
    let (id, from, records) = c
        .controller
        .add_partitions(&c.image, "grows", 5, None)
        .expect("three more");
    assert_eq!((id, from), (t, 2));
    // Computed on the same image: both name 2 partitions, only the first applies.
    let (_, _, raced) = c
        .controller
        .add_partitions(&c.image, "grows", 3, None)
        .expect("one more");
    c.apply(records);
    let mut view = c.image.clone();
    assert!(matches!(
        view.apply(c.next, &raced[0]),
        Err(crate::metadata::ApplyError::InvalidState(_))
    ));
    let topic = &c.image.topics[&t];
    assert_eq!(topic.partitions.len(), 5);
    // The whole topic is placed as if it had been created with 5 partitions.
    let fresh = placement::assign(&c.image, "grows", 5, 2).expect("placement");
    for (i, p) in topic.partitions.iter().enumerate() {
        assert_eq!(p.assignment, fresh[i], "partition {i}");
        assert_eq!(p.state.leader, p.assignment.replicas[0]);
        assert_eq!(p.state.isr, p.assignment.replicas);
        assert_eq!((p.state.leader_epoch, p.state.partition_epoch), (0, 0));
    }
    assert_eq!(
        c.controller.add_partitions(&c.image, "grows", 5, None),
        Err(ControllerError::Placement(
            PlacementError::InvalidPartitions(5)
        ))
    );
    assert_eq!(
        c.controller.add_partitions(&c.image, "nope", 5, None),
        Err(ControllerError::UnknownTopicOrPartition)
    );
    // Explicit lists: one per new partition, of the topic's factor, registered brokers.
    for bad in [
        vec![vec![1, 2]],
        vec![vec![1, 2], vec![3]],
        vec![vec![1, 2], vec![3, 9]],
        vec![vec![1, 2], vec![3, 3]],
    ] {
        assert!(
            matches!(
                c.controller
                    .add_partitions(&c.image, "grows", 7, Some(bad.clone())),
                Err(ControllerError::Placement(
                    PlacementError::InvalidReplicaAssignment(_)
                ))
            ),
            "{bad:?}"
        );
    }
    let (_, _, records) = c
        .controller
        .add_partitions(&c.image, "grows", 7, Some(vec![vec![3, 1], vec![2, 3]]))
        .expect("explicit lists");
    c.apply(records);
    let topic = &c.image.topics[&t];
    assert_eq!(topic.partitions[5].assignment.replicas, vec![3, 1]);
    assert_eq!(topic.partitions[6].state.leader, 2);
}

#[test]
fn a_cancelled_reassignment_returns_to_the_replicas_it_started_from() {
    let mut c = Cluster::new();
    for b in 1..=4 {
        c.join(b, 0);
    }
    let t = c.create("t", 1, 2);
    let before = c.image.topics[&t].partitions[0].clone();
    let leader = before.state.leader;
    assert_eq!(
        c.controller.reassign(&c.image, t, 0, None),
        Err(ControllerError::NoReassignmentInProgress(
            "partition 0 is not being reassigned".into()
        ))
    );
    // To two brokers, keeping the leader: the new one is not in sync yet.
    let newcomer = (1..=4)
        .find(|b| !before.assignment.replicas.contains(b))
        .expect("a broker without a replica");
    let target = vec![newcomer, leader];
    let records = c
        .controller
        .reassign(&c.image, t, 0, Some(target.clone()))
        .expect("started");
    c.apply(records);
    let p = &c.image.topics[&t].partitions[0];
    assert_eq!(p.target.as_ref(), Some(&target));
    assert_eq!(p.original.as_ref(), Some(&before.assignment.replicas));
    assert_eq!(p.assignment.replicas.len(), 3);
    let records = c
        .controller
        .reassign(&c.image, t, 0, None)
        .expect("cancelled");
    c.apply(records);
    let p = &c.image.topics[&t].partitions[0];
    assert_eq!(p.assignment.replicas, before.assignment.replicas);
    assert_eq!((p.target.clone(), p.original.clone()), (None, None));
    assert_eq!(p.state.leader, leader);
    assert_eq!(p.state.leader_epoch, before.state.leader_epoch);
    assert!(p
        .state
        .isr
        .iter()
        .all(|r| before.assignment.replicas.contains(r)));
    assert!(p.state.partition_epoch > before.state.partition_epoch);
    // A new reassignment may start again, and a finished one leaves nothing to cancel.
    let records = c
        .controller
        .reassign(&c.image, t, 0, Some(target.clone()))
        .expect("started again");
    c.apply(records);
    assert!(c.image.topics[&t].partitions[0].original.is_some());
}
