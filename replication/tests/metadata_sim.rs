//! A deterministic simulation of the metadata quorum and the controller: several nodes, each
//! a quorum voter (raft-rs through `Quorum`) and a broker, on a simulated network and clock
//! with message loss, duplication, delay and reordering, network partitions, and crashes that
//! lose whatever a node had not made durable yet (its pending persist, and the messages that
//! had to wait for it).
//!
//! After every step it checks that no two nodes lead in one term, that every node applies the
//! same record at the same log index, and that no two brokers lead a partition in one leader
//! epoch. At the end the faults stop and the cluster must settle: one leader, the same image
//! everywhere, every broker unfenced, every partition led by its preferred replica with every
//! replica in sync. Nodes snapshot their image every few entries and let go of the log
//! before it, so a node that restarts or falls behind is rebuilt from a snapshot (its own or
//! the leader's); every snapshot at an index must hold the same image. A seed reproduces a
//! run: `SPATE_SIM_SEED=N SPATE_SIM_SEEDS=1`.

mod sim;

use std::collections::{BTreeMap, VecDeque};

use spate_replication::controller::{AlterPartition, Controller, ControllerConfig, CreateTopic};
use spate_replication::metadata::{
    decode_batch, encode_batch, BrokerId, BrokerRegistration, ClusterImage, MetadataRecord,
    TopicId, NO_LEADER,
};
use spate_replication::quorum::{wire, Durable, Output, Quorum, QuorumConfig};

use sim::net::{Faults, Network};
use sim::Rng;

const CLUSTER: [u8; 16] = [0x5a; 16];
const STEP_MS: u64 = 100;
/// Entries between snapshots, and how many before a snapshot the log keeps.
const SNAPSHOT_EVERY: u64 = 12;
const SNAPSHOT_KEEP: u64 = 3;

#[derive(Debug, Clone)]
enum Msg {
    Raft(Vec<u8>),
    Register(BrokerRegistration),
    Heartbeat {
        id: BrokerId,
        epoch: u64,
        applied: u64,
    },
    Alter(AlterPartition),
}

struct Pending {
    out: Output,
    done_at: u64,
}

struct Node {
    id: u64,
    quorum: Option<Quorum>,
    durable: Durable,
    pending: Option<Pending>,
    inbox: VecDeque<(u64, Msg)>,
    image: ClusterImage,
    applied: u64,
    controller: Option<Controller>,
    incarnation: [u8; 16],
    down_until: u64,
    last_bootstrap: u64,
}

/// What every node has seen, to check them against each other.
#[derive(Default)]
struct History {
    leaders_by_term: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, Vec<u8>>,
    partition_leaders: BTreeMap<(TopicId, u32, i32), BrokerId>,
    /// The image each snapshot taken at an index holds.
    snapshots: BTreeMap<u64, ClusterImage>,
    trace: u64,
}

impl History {
    fn note(&mut self, x: u64) {
        self.trace = self.trace.rotate_left(5) ^ x.wrapping_mul(0x100_0000_01b3);
    }
}

struct Sim {
    rng: Rng,
    net: Network<Msg>,
    nodes: Vec<Node>,
    voters: Vec<u64>,
    now: u64,
    topics: u64,
    history: History,
    config: ControllerConfig,
}

impl Sim {
    fn new(seed: u64, n: u64) -> Self {
        let mut rng = Rng::new(seed);
        let voters: Vec<u64> = (1..=n).collect();
        let nodes = voters
            .iter()
            .map(|&id| Node {
                id,
                quorum: Some(
                    Quorum::start(
                        &QuorumConfig::new(id, voters.clone(), seed),
                        Durable::default(),
                    )
                    .expect("start"),
                ),
                durable: Durable::default(),
                pending: None,
                inbox: VecDeque::new(),
                image: ClusterImage::default(),
                applied: 0,
                controller: None,
                incarnation: rng.bytes16(),
                down_until: 0,
                last_bootstrap: 0,
            })
            .collect();
        Sim {
            rng,
            net: Network::new(Faults {
                drop: 30,
                duplicate: 10,
                max_delay: 4,
            }),
            nodes,
            voters,
            now: 0,
            topics: 0,
            history: History::default(),
            config: ControllerConfig {
                leader_imbalance_check_interval_ms: 5_000,
                ..ControllerConfig::default()
            },
        }
    }

    fn now_ms(&self) -> u64 {
        self.now * STEP_MS
    }

    fn faults(&mut self) {
        let n = self.nodes.len();
        let i = self.rng.below(n as u64) as usize;
        if self.nodes[i].quorum.is_some() && self.rng.chance(4) {
            let node = &mut self.nodes[i];
            // Power loss: the pending persist never completes; memory is gone.
            node.quorum = None;
            node.pending = None;
            node.inbox.clear();
            node.controller = None;
            node.down_until = self.now + 20 + self.rng.below(200);
            self.net.drop_to(node.id);
            self.history.note(1000 + node.id);
        }
        if self.rng.chance(3) {
            self.net.partition_at_random(&mut self.rng, &self.voters);
        } else if self.rng.chance(10) {
            self.net.heal();
        }
    }

    fn restart_due(&mut self, all: bool) {
        for i in 0..self.nodes.len() {
            let node = &self.nodes[i];
            if node.quorum.is_none() && (all || node.down_until <= self.now) {
                let config = QuorumConfig::new(node.id, self.voters.clone(), self.rng.next());
                let quorum = Quorum::start(&config, node.durable.clone()).expect("restart");
                let incarnation = self.rng.bytes16();
                let node = &mut self.nodes[i];
                node.quorum = Some(quorum);
                // Rebuilt from its snapshot, then by replaying the committed log after it.
                match &node.durable.snapshot {
                    Some(snap) => {
                        node.image = ClusterImage::decode(&snap.data).expect("own snapshot");
                        node.image.applied_index = snap.index;
                        node.applied = snap.index;
                    }
                    None => {
                        node.image = ClusterImage::default();
                        node.applied = 0;
                    }
                }
                node.incarnation = incarnation;
            }
        }
    }

    fn step(&mut self) {
        self.now += 1;
        for (from, to, msg) in self.net.deliver(&mut self.rng, self.now) {
            if let Some(node) = self.nodes.iter_mut().find(|n| n.id == to) {
                if node.quorum.is_some() {
                    node.inbox.push_back((from, msg));
                }
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].quorum.is_some() {
                self.run_node(i);
            }
        }
        self.check();
    }

    fn run_node(&mut self, i: usize) {
        let now = self.now;
        let now_ms = self.now_ms();
        if let Some(p) = &self.nodes[i].pending {
            if p.done_at > now {
                return;
            }
            let out = self.nodes[i].pending.take().expect("pending").out;
            self.complete(i, out);
        }
        let node_id = self.nodes[i].id;
        let mut outgoing: Vec<(u64, Msg)> = Vec::new();
        let mut proposals: Vec<Vec<MetadataRecord>> = Vec::new();
        {
            let node = &mut self.nodes[i];
            let Some(q) = node.quorum.as_mut() else {
                return;
            };
            while let Some((_from, msg)) = node.inbox.pop_front() {
                match msg {
                    Msg::Raft(bytes) => match wire::decode(&bytes, &CLUSTER, node_id) {
                        Ok(m) => {
                            let _ = q.step(m);
                        }
                        Err(e) => panic!("the simulation only sends valid messages: {e}"),
                    },
                    other => {
                        if let Some(c) = node.controller.as_mut() {
                            let records = match other {
                                Msg::Register(reg) => c.register(&node.image, reg, now_ms).ok(),
                                Msg::Heartbeat { id, epoch, applied } => c
                                    .heartbeat(&node.image, id, epoch, applied, now_ms)
                                    .ok()
                                    .map(|r| r.records),
                                Msg::Alter(req) => c.alter_partition(&node.image, &req).ok(),
                                Msg::Raft(_) => None,
                            };
                            if let Some(r) = records.filter(|r| !r.is_empty()) {
                                proposals.push(r);
                            }
                        }
                    }
                }
            }
            q.tick();
            if q.is_leader() {
                let c = node
                    .controller
                    .get_or_insert_with(|| Controller::new(self.config.clone(), now_ms));
                if node.image.cluster_id.is_none() && now >= node.last_bootstrap + 20 {
                    node.last_bootstrap = now;
                    proposals.push(vec![MetadataRecord::Bootstrap {
                        cluster_id: CLUSTER,
                    }]);
                }
                let records = c.tick(&node.image, now_ms);
                if !records.is_empty() {
                    proposals.push(records);
                }
            } else {
                node.controller = None;
            }
            // The broker side: register, then heartbeat, to the leader it knows.
            if let Some(leader) = q.leader() {
                let mine = node
                    .image
                    .brokers
                    .get(&(node_id as BrokerId))
                    .filter(|b| b.registration.incarnation == node.incarnation);
                match mine {
                    None if now % 10 == node_id % 10 => outgoing.push((
                        leader,
                        Msg::Register(sim::registration(node_id, node.incarnation, 2)),
                    )),
                    Some(b) if now % 5 == node_id % 5 => outgoing.push((
                        leader,
                        Msg::Heartbeat {
                            id: node_id as BrokerId,
                            epoch: b.epoch,
                            applied: node.image.applied_index,
                        },
                    )),
                    _ => {}
                }
                // As a partition leader: ask for every live replica in the ISR (as if each
                // had caught up), now and then.
                if let Some(b) = mine.filter(|_| now % 20 == node_id % 20) {
                    for (tid, topic) in &node.image.topics {
                        for (p, part) in topic.partitions.iter().enumerate() {
                            if part.state.leader != node_id as BrokerId {
                                continue;
                            }
                            let isr: Vec<BrokerId> = part
                                .assignment
                                .replicas
                                .iter()
                                .copied()
                                .filter(|r| node.image.is_live(*r))
                                .collect();
                            outgoing.push((
                                leader,
                                Msg::Alter(AlterPartition {
                                    broker_id: node_id as BrokerId,
                                    broker_epoch: b.epoch,
                                    topic_id: *tid,
                                    partition: p as u32,
                                    leader_epoch: part.state.leader_epoch,
                                    partition_epoch: part.state.partition_epoch,
                                    new_isr: isr,
                                }),
                            ));
                        }
                    }
                }
            }
        }
        if self.nodes[i].controller.is_some() && self.rng.chance(15) && self.topics < 6 {
            let node = &self.nodes[i];
            let live = node.image.live_brokers().count() as i32;
            let req = CreateTopic {
                name: format!("t{}", self.topics),
                topic_id: self.rng.bytes16(),
                partitions: 1 + self.rng.below(3) as i32,
                replication_factor: live.min(3),
                assignment: None,
                configs: vec![],
            };
            if let Some(c) = &node.controller {
                if let Ok(records) = c.create_topic(&node.image, req) {
                    self.topics += 1;
                    proposals.push(records);
                }
            }
        }
        let node = &mut self.nodes[i];
        let q = node.quorum.as_mut().expect("up");
        for batch in proposals {
            let _ = q.propose(encode_batch(&batch));
        }
        for (to, msg) in outgoing {
            self.net.send(&mut self.rng, now, node_id, to, msg);
        }
        let node = &mut self.nodes[i];
        let q = node.quorum.as_mut().expect("up");
        if let Some(mut out) = q.ready() {
            for m in std::mem::take(&mut out.send) {
                let to = m.to;
                let bytes = wire::encode(&CLUSTER, &m);
                self.net
                    .send(&mut self.rng, now, node_id, to, Msg::Raft(bytes));
            }
            if out.persist.is_empty() {
                self.complete(i, out);
            } else {
                let delay = self.rng.below(3);
                self.nodes[i].pending = Some(Pending {
                    out,
                    done_at: now + delay,
                });
            }
        }
    }

    /// The persist is durable: send what waited for it, apply what is committed.
    fn complete(&mut self, i: usize, out: Output) {
        let now = self.now;
        let node_id = self.nodes[i].id;
        self.nodes[i].durable.apply(&out.persist);
        if let Some(snap) = &out.persist.snapshot {
            let mut image = ClusterImage::decode(&snap.data).expect("the leader's snapshot");
            image.applied_index = snap.index;
            if let Some(seen) = self.history.snapshots.get(&snap.index) {
                assert_eq!(
                    seen, &image,
                    "node {node_id} installs another image at {}",
                    snap.index
                );
            }
            let node = &mut self.nodes[i];
            assert!(
                snap.index > node.applied,
                "a snapshot behind what node {node_id} applied"
            );
            node.image = image;
            node.applied = snap.index;
            self.history.note(50_000 + snap.index);
        }
        for m in out.send_after_persist {
            let to = m.to;
            let bytes = wire::encode(&CLUSTER, &m);
            self.net
                .send(&mut self.rng, now, node_id, to, Msg::Raft(bytes));
        }
        for (index, data) in out.committed {
            let node = &mut self.nodes[i];
            assert!(
                index > node.applied,
                "node {node_id} applies {index} after {}",
                node.applied
            );
            node.applied = index;
            match self.history.committed.get(&index) {
                Some(d) => assert_eq!(d, &data, "node {node_id} applies another entry at {index}"),
                None => {
                    self.history.committed.insert(index, data.clone());
                }
            }
            self.history.note(index);
            let batch = decode_batch(&data).expect("the simulation proposes valid batches");
            for r in &batch {
                let _ = node.image.apply(index, r);
            }
            for (tid, topic) in &node.image.topics {
                for (p, part) in topic.partitions.iter().enumerate() {
                    let s = &part.state;
                    assert!(!s.isr.is_empty());
                    assert!(s.leader == NO_LEADER || s.isr.contains(&s.leader));
                    if s.leader == NO_LEADER {
                        continue;
                    }
                    let key = (*tid, p as u32, s.leader_epoch);
                    let leader = *self
                        .history
                        .partition_leaders
                        .entry(key)
                        .or_insert(s.leader);
                    assert_eq!(
                        leader, s.leader,
                        "two leaders of {}-{p} in epoch {}",
                        topic.name, s.leader_epoch
                    );
                }
            }
        }
        self.snapshot_if_due(i);
    }

    /// Every `SNAPSHOT_EVERY` entries the node snapshots its image (saved at once).
    fn snapshot_if_due(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let Some(q) = node.quorum.as_mut() else {
            return;
        };
        let index = node.image.applied_index;
        if index < q.snapshot_index() + SNAPSHOT_EVERY {
            return;
        }
        let Ok(c) = q.compact(index, node.image.encode(), SNAPSHOT_KEEP) else {
            return;
        };
        node.durable.compact(&c);
        let image = node.image.clone();
        match self.history.snapshots.get(&index) {
            Some(seen) => assert_eq!(
                seen, &image,
                "node {} snapshots another image at {index}",
                node.id
            ),
            None => {
                self.history.snapshots.insert(index, image);
            }
        }
    }

    fn check(&mut self) {
        for node in &self.nodes {
            if let Some(q) = &node.quorum {
                if q.is_leader() {
                    let l = *self
                        .history
                        .leaders_by_term
                        .entry(q.term())
                        .or_insert(node.id);
                    assert_eq!(l, node.id, "two leaders in term {}", q.term());
                }
            }
        }
    }
}

/// Runs one seed: `steps` with faults, then a quiet settling period; returns the trace hash.
fn run(seed: u64, nodes: u64, steps: u64) -> u64 {
    let mut s = Sim::new(seed, nodes);
    for _ in 0..steps {
        s.faults();
        s.restart_due(false);
        s.step();
    }
    s.net.heal();
    s.net.faults = Faults::NONE;
    s.restart_due(true);
    for _ in 0..1500 {
        s.step();
    }
    let leaders: Vec<u64> = s
        .nodes
        .iter()
        .filter(|n| n.quorum.as_ref().is_some_and(|q| q.is_leader()))
        .map(|n| n.id)
        .collect();
    assert_eq!(leaders.len(), 1, "seed {seed}: one leader at the end");
    let image = &s.nodes[0].image;
    assert_eq!(image.cluster_id, Some(CLUSTER), "seed {seed}");
    for n in &s.nodes {
        assert_eq!(
            &n.image, image,
            "seed {seed}: node {} has another image",
            n.id
        );
    }
    assert_eq!(image.brokers.len() as u64, nodes, "seed {seed}");
    assert!(
        image.brokers.values().all(|b| !b.fenced),
        "seed {seed}: all unfenced"
    );
    assert!(
        !image.topics.is_empty(),
        "seed {seed}: some topic was created"
    );
    for topic in image.topics.values() {
        for (p, part) in topic.partitions.iter().enumerate() {
            let mut isr = part.state.isr.clone();
            isr.sort_unstable();
            let mut replicas = part.assignment.replicas.clone();
            replicas.sort_unstable();
            assert_eq!(
                isr, replicas,
                "seed {seed}: {}-{p} has every replica in sync",
                topic.name
            );
            assert_eq!(
                part.state.leader, part.assignment.replicas[0],
                "seed {seed}: {}-{p} is led by its preferred replica",
                topic.name
            );
        }
    }
    s.history.trace
}

#[test]
fn three_voters_stay_safe_and_settle() {
    for seed in sim::seeds(30) {
        run(seed, 3, 3000);
    }
}

#[test]
fn five_voters_stay_safe_and_settle() {
    for seed in sim::seeds(8) {
        run(seed * 1000, 5, 3000);
    }
}

#[test]
fn a_seed_replays_the_same_run() {
    assert_eq!(run(77, 3, 1500), run(77, 3, 1500));
}
