//! A deterministic simulation of one replicated partition (RF 3, min.insync.replicas 2) on
//! three brokers, with the controller's real logic (`Controller` on a `ClusterImage`), the
//! leader's ISR and high-watermark rules (`ReplicaSet`), and the followers' divergence search
//! and fetching (`Follower`), on a network that loses, duplicates, delays and reorders
//! messages and can be cut in two, with power losses that drop each broker's unsynced
//! writes. Metadata reaches brokers and the producer late, so stale leaders exist.
//!
//! The controller itself does not crash here (the quorum has its own simulation,
//! metadata_sim.rs); it applies its records at once.
//!
//! Checked after every step:
//! - no record acknowledged to the producer, and none a replica served below its high
//!   watermark, is ever lost or replaced: every broker in the committed ISR holds it, and no
//!   replica ever serves another record at its offset;
//! - no two brokers append as leader in one leader epoch.
//!
//! At the end the faults stop: every acked record is in every replica's log, once, in order.
//! A seed replays a run: `SPATE_SIM_SEED=N SPATE_SIM_SEEDS=1`.

mod sim;

use std::collections::{BTreeMap, VecDeque};

use spate_replication::controller::{AlterPartition, Controller, ControllerConfig, CreateTopic};
use spate_replication::divergence::{EpochEnd, EpochHistory, EpochList};
use spate_replication::follower::{Action, Follower, Refusal};
use spate_replication::isr::{AckState, IsrConfig, Leadership, ReplicaSet};
use spate_replication::metadata::{
    BrokerId, BrokerRegistration, ClusterImage, MetadataRecord, NO_LEADER,
};

use sim::net::{Faults, Network};
use sim::Rng;

const CONTROLLER: u64 = 100;
const CLIENT: u64 = 200;
const BROKERS: [u64; 3] = [1, 2, 3];
const TOPIC: [u8; 16] = [7; 16];
const STEP_MS: u64 = 100;
const MIN_ISR: usize = 2;

#[derive(Debug, Clone)]
enum Msg {
    Register(BrokerRegistration),
    Heartbeat {
        id: BrokerId,
        epoch: u64,
        applied: u64,
    },
    Alter(AlterPartition),
    Metadata(Box<ClusterImage>),
    Produce {
        value: u64,
    },
    Acked {
        value: u64,
        offset: u64,
    },
    Fetch {
        leader_epoch: i32,
        offset: u64,
        durable: u64,
    },
    Records {
        leader_epoch: i32,
        offset: u64,
        records: Vec<(i32, u64)>,
        high_watermark: u64,
    },
    AskEpochEnd {
        leader_epoch: i32,
        epoch: i32,
    },
    EpochEnd {
        leader_epoch: i32,
        epoch: i32,
        answer: EpochEnd,
    },
    Refused {
        leader_epoch: i32,
        refusal: Refusal,
    },
}

/// A replica's log: (epoch, value) per offset from 0, of which a prefix is durable.
#[derive(Debug, Clone, Default)]
struct Log {
    records: Vec<(i32, u64)>,
    durable: usize,
    high_watermark: u64,
}

impl Log {
    fn end(&self) -> u64 {
        self.records.len() as u64
    }

    fn epochs(&self) -> EpochList {
        let epochs: Vec<i32> = self.records.iter().map(|r| r.0).collect();
        EpochList::of_offsets(&epochs)
    }

    fn truncate(&mut self, offset: u64) {
        let at = offset as usize;
        if at < self.records.len() {
            self.records.truncate(at);
        }
        self.durable = self.durable.min(self.records.len());
        self.high_watermark = self.high_watermark.min(self.end());
    }
}

enum Role {
    None,
    Leader {
        set: ReplicaSet,
        waiting: Vec<(u64, u64)>,
    },
    Follower {
        f: Follower,
        in_flight_since: Option<u64>,
        last_action: Action,
    },
}

struct Broker {
    id: u64,
    up: bool,
    down_until: u64,
    incarnation: [u8; 16],
    log: Log,
    image: ClusterImage,
    role: Role,
    inbox: VecDeque<(u64, Msg)>,
}

struct ControllerNode {
    controller: Controller,
    image: ClusterImage,
    next_index: u64,
    inbox: VecDeque<(u64, Msg)>,
}

#[derive(Default)]
struct Checks {
    /// Offset -> value, for every record acked or served below a high watermark.
    committed: BTreeMap<u64, u64>,
    /// Leader epoch -> the broker that appended as its leader.
    writers: BTreeMap<i32, u64>,
    acked: BTreeMap<u64, u64>,
}

struct Sim {
    rng: Rng,
    net: Network<Msg>,
    now: u64,
    brokers: Vec<Broker>,
    controller: ControllerNode,
    client_image: ClusterImage,
    next_value: u64,
    checks: Checks,
    isr_config: IsrConfig,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut image = ClusterImage::default();
        let _ = image.apply(
            1,
            &MetadataRecord::Bootstrap {
                cluster_id: [1; 16],
            },
        );
        let brokers = BROKERS
            .iter()
            .map(|&id| Broker {
                id,
                up: true,
                down_until: 0,
                incarnation: rng.bytes16(),
                log: Log::default(),
                image: ClusterImage::default(),
                role: Role::None,
                inbox: VecDeque::new(),
            })
            .collect();
        Sim {
            rng,
            net: Network::new(Faults {
                drop: 30,
                duplicate: 10,
                max_delay: 3,
            }),
            now: 0,
            brokers,
            controller: ControllerNode {
                controller: Controller::new(
                    ControllerConfig {
                        broker_session_timeout_ms: 3_000,
                        ..ControllerConfig::default()
                    },
                    0,
                ),
                image,
                next_index: 2,
                inbox: VecDeque::new(),
            },
            client_image: ClusterImage::default(),
            next_value: 1,
            checks: Checks::default(),
            isr_config: IsrConfig {
                replica_lag_time_max_ms: 1_500,
                min_insync_replicas: MIN_ISR,
            },
        }
    }

    fn now_ms(&self) -> u64 {
        self.now * STEP_MS
    }

    fn send(&mut self, from: u64, to: u64, msg: Msg) {
        let now = self.now;
        self.net.send(&mut self.rng, now, from, to, msg);
    }

    fn faults(&mut self) {
        let i = self.rng.below(3) as usize;
        if self.brokers[i].up && self.rng.chance(5) {
            let b = &mut self.brokers[i];
            // Power loss: what was not synced is gone.
            b.up = false;
            let durable = b.log.durable as u64;
            b.log.truncate(durable);
            b.log.high_watermark = 0;
            b.role = Role::None;
            b.inbox.clear();
            b.down_until = self.now + 10 + self.rng.below(150);
            let id = b.id;
            self.net.drop_to(id);
        }
        if self.rng.chance(4) {
            let nodes: Vec<u64> = BROKERS
                .iter()
                .copied()
                .chain([CONTROLLER, CLIENT])
                .collect();
            self.net.partition_at_random(&mut self.rng, &nodes);
        } else if self.rng.chance(15) {
            self.net.heal();
        }
    }

    fn restart_due(&mut self, all: bool) {
        for i in 0..3 {
            if !self.brokers[i].up && (all || self.brokers[i].down_until <= self.now) {
                let incarnation = self.rng.bytes16();
                let b = &mut self.brokers[i];
                b.up = true;
                b.incarnation = incarnation;
                b.image = ClusterImage::default();
            }
        }
    }

    fn step(&mut self, produce: bool) {
        self.now += 1;
        for (from, to, msg) in self.net.deliver(&mut self.rng, self.now) {
            if to == CONTROLLER {
                self.controller.inbox.push_back((from, msg));
            } else if to == CLIENT {
                self.client_message(msg);
            } else if let Some(b) = self.brokers.iter_mut().find(|b| b.id == to && b.up) {
                b.inbox.push_back((from, msg));
            }
        }
        self.run_controller();
        for i in 0..3 {
            if self.brokers[i].up {
                self.run_broker(i);
            }
        }
        if produce && self.rng.chance(300) {
            self.produce();
        }
        self.check();
    }

    fn run_controller(&mut self) {
        let now_ms = self.now_ms();
        let mut records = Vec::new();
        while let Some((_, msg)) = self.controller.inbox.pop_front() {
            let c = &mut self.controller;
            let r = match msg {
                Msg::Register(reg) => c.controller.register(&c.image, reg, now_ms).ok(),
                Msg::Heartbeat { id, epoch, applied } => c
                    .controller
                    .heartbeat(&c.image, id, epoch, applied, now_ms)
                    .ok()
                    .map(|r| r.records),
                Msg::Alter(req) => c.controller.alter_partition(&c.image, &req).ok(),
                _ => None,
            };
            records.extend(r.unwrap_or_default());
            self.apply_records(std::mem::take(&mut records));
        }
        let c = &mut self.controller;
        if c.image.topics.is_empty() && c.image.live_brokers().count() == 3 {
            let r = c.controller.create_topic(
                &c.image,
                CreateTopic {
                    name: "t".into(),
                    topic_id: TOPIC,
                    partitions: 1,
                    replication_factor: 3,
                    assignment: None,
                    configs: vec![],
                },
            );
            self.apply_records(r.unwrap_or_default());
        }
        let c = &mut self.controller;
        let r = c.controller.tick(&c.image, now_ms);
        self.apply_records(r);
        if self.now % 3 == 0 {
            let image = Box::new(self.controller.image.clone());
            for to in BROKERS.iter().copied().chain([CLIENT]) {
                self.send(CONTROLLER, to, Msg::Metadata(image.clone()));
            }
        }
    }

    fn apply_records(&mut self, records: Vec<MetadataRecord>) {
        let c = &mut self.controller;
        for r in records {
            let _ = c.image.apply(c.next_index, &r);
            c.next_index += 1;
        }
    }

    fn produce(&mut self) {
        let Some(p) = self.client_image.partition(&TOPIC, 0) else {
            return;
        };
        if p.state.leader == NO_LEADER {
            return;
        }
        let to = p.state.leader as u64;
        let value = self.next_value;
        self.next_value += 1;
        self.send(CLIENT, to, Msg::Produce { value });
    }

    fn client_message(&mut self, msg: Msg) {
        match msg {
            Msg::Metadata(image) if image.applied_index > self.client_image.applied_index => {
                self.client_image = *image;
            }
            Msg::Acked { value, offset } => {
                if let Some(v) = self.checks.acked.insert(offset, value) {
                    assert_eq!(v, value, "offset {offset} acked for two values");
                }
                self.commit(offset, value, "acked");
            }
            _ => {}
        }
    }

    fn commit(&mut self, offset: u64, value: u64, how: &str) {
        match self.checks.committed.get(&offset) {
            Some(&v) => assert_eq!(
                v, value,
                "offset {offset} {how} as {value}, earlier committed as {v}"
            ),
            None => {
                self.checks.committed.insert(offset, value);
            }
        }
    }

    fn run_broker(&mut self, i: usize) {
        let now = self.now;
        let now_ms = self.now_ms();
        let id = self.brokers[i].id;
        let mut out: Vec<(u64, Msg)> = Vec::new();
        let mut newest: Option<Box<ClusterImage>> = None;
        let inbox: Vec<(u64, Msg)> = self.brokers[i].inbox.drain(..).collect();
        for (from, msg) in inbox {
            match msg {
                Msg::Metadata(image) => {
                    if image.applied_index > self.brokers[i].image.applied_index
                        && newest
                            .as_ref()
                            .is_none_or(|n| image.applied_index > n.applied_index)
                    {
                        newest = Some(image);
                    }
                }
                other => self.broker_message(i, from, other, &mut out),
            }
        }
        if let Some(image) = newest {
            self.brokers[i].image = *image;
            self.on_metadata(i, &mut out);
        }
        let b = &mut self.brokers[i];
        // Group commit: now and then the log is synced.
        if self.rng.chance(400) {
            b.log.durable = b.log.records.len();
        }
        let durable = b.log.durable as u64;
        let mine = b
            .image
            .brokers
            .get(&(id as BrokerId))
            .filter(|r| r.registration.incarnation == b.incarnation)
            .map(|r| r.epoch);
        match (mine, now % 5 == id % 5) {
            (None, true) => out.push((
                CONTROLLER,
                Msg::Register(sim::registration(id, b.incarnation, 1)),
            )),
            (Some(epoch), true) => out.push((
                CONTROLLER,
                Msg::Heartbeat {
                    id: id as BrokerId,
                    epoch,
                    applied: b.image.applied_index,
                },
            )),
            _ => {}
        }
        match &mut b.role {
            Role::Leader { set, waiting } => {
                set.on_leader_durable(durable);
                b.log.high_watermark = set.high_watermark();
                // A change in flight is sent again now and then (the request or its answer
                // may be lost); it stays pending until the metadata shows its outcome.
                let change = match set.propose(now_ms) {
                    Some(c) => Some(c),
                    None if now % 20 == 0 => set.pending().cloned(),
                    None => None,
                };
                if let (Some(change), Some(epoch)) = (change, mine) {
                    out.push((
                        CONTROLLER,
                        Msg::Alter(AlterPartition {
                            broker_id: id as BrokerId,
                            broker_epoch: epoch,
                            topic_id: TOPIC,
                            partition: 0,
                            leader_epoch: change.leader_epoch,
                            partition_epoch: change.partition_epoch,
                            new_isr: change.new_isr,
                        }),
                    ));
                }
                let set = &*set;
                waiting.retain(|&(value, end)| match set.ack_state(end) {
                    AckState::Waiting => true,
                    AckState::Acked => {
                        out.push((
                            CLIENT,
                            Msg::Acked {
                                value,
                                offset: end - 1,
                            },
                        ));
                        false
                    }
                    AckState::NotEnoughReplicasAfterAppend => false,
                });
            }
            Role::Follower {
                f,
                in_flight_since,
                last_action,
            } => {
                // A request lost on the way: ask again.
                if in_flight_since.is_some_and(|t| now >= t + 10) {
                    *in_flight_since = None;
                    *last_action = f.resume();
                }
                if in_flight_since.is_none() {
                    let action = *last_action;
                    self.follower_action(i, action, &mut out);
                }
            }
            Role::None => {}
        }
        for (to, msg) in out {
            self.send(id, to, msg);
        }
    }

    /// The broker learned newer metadata: become leader or follower of the partition.
    fn on_metadata(&mut self, i: usize, out: &mut Vec<(u64, Msg)>) {
        let now_ms = self.now_ms();
        let isr_config = self.isr_config;
        let b = &mut self.brokers[i];
        let id = b.id as BrokerId;
        let mine = b
            .image
            .brokers
            .get(&id)
            .is_some_and(|r| r.registration.incarnation == b.incarnation);
        let Some(p) = b.image.partition(&TOPIC, 0).cloned() else {
            return;
        };
        if !mine {
            return;
        }
        let state = &p.state;
        if state.leader == id && !b.image.is_live(id) {
            // A fenced broker leads nothing until the controller lets it back (it may be a
            // restart that lost its unsynced tail); it goes on following.
            b.role = Role::None;
            return;
        }
        if state.leader == id {
            match &mut b.role {
                Role::Leader { set, .. } if set.leader_epoch() == state.leader_epoch => {
                    set.on_isr_committed(state.isr.clone(), state.partition_epoch);
                }
                _ => {
                    b.role = Role::Leader {
                        set: ReplicaSet::new(
                            Leadership {
                                me: id,
                                leader_epoch: state.leader_epoch,
                                partition_epoch: state.partition_epoch,
                                replicas: p.assignment.replicas.clone(),
                                isr: state.isr.clone(),
                                log_end: b.log.end(),
                                durable: b.log.durable as u64,
                                high_watermark: b.log.high_watermark,
                            },
                            isr_config,
                            now_ms,
                        ),
                        waiting: Vec::new(),
                    };
                }
            }
            return;
        }
        let leader = (state.leader != NO_LEADER).then_some(state.leader);
        let epochs = b.log.epochs();
        match &mut b.role {
            Role::Follower {
                f,
                in_flight_since,
                last_action,
            } => {
                if let Some(action) = f.on_leadership(leader, state.leader_epoch, &epochs) {
                    *in_flight_since = None;
                    *last_action = action;
                }
            }
            _ => {
                let mut f = Follower::new(id);
                let action = f
                    .on_leadership(leader, state.leader_epoch, &epochs)
                    .unwrap_or(Action::Idle);
                b.role = Role::Follower {
                    f,
                    in_flight_since: None,
                    last_action: action,
                };
            }
        }
        let _ = out;
    }

    fn follower_action(&mut self, i: usize, action: Action, out: &mut Vec<(u64, Msg)>) {
        let now = self.now;
        let b = &mut self.brokers[i];
        let Role::Follower {
            f,
            in_flight_since,
            last_action,
        } = &mut b.role
        else {
            return;
        };
        let Some((leader, epoch)) = f.leader() else {
            return;
        };
        match action {
            Action::AskEpochEnd {
                epoch: asked,
                truncate_to,
            } => {
                if let Some(o) = truncate_to {
                    b.log.truncate(o);
                }
                *last_action = Action::AskEpochEnd {
                    epoch: asked,
                    truncate_to: None,
                };
                *in_flight_since = Some(now);
                out.push((
                    leader as u64,
                    Msg::AskEpochEnd {
                        leader_epoch: epoch,
                        epoch: asked,
                    },
                ));
            }
            Action::Truncate(o) => {
                b.log.truncate(o);
                *last_action = Action::Fetch;
            }
            Action::TruncateFully => {
                b.log.truncate(0);
                *last_action = Action::Fetch;
            }
            Action::StartAt(o) => {
                panic!("every simulated log starts at 0, yet a follower was told to start at {o}")
            }
            Action::Fetch => {
                *in_flight_since = Some(now);
                out.push((
                    leader as u64,
                    Msg::Fetch {
                        leader_epoch: epoch,
                        offset: b.log.end(),
                        durable: b.log.durable as u64,
                    },
                ));
            }
            Action::Idle => {}
        }
    }

    fn broker_message(&mut self, i: usize, from: u64, msg: Msg, out: &mut Vec<(u64, Msg)>) {
        let now_ms = self.now_ms();
        let b = &mut self.brokers[i];
        let id = b.id;
        match msg {
            Msg::Produce { value } => {
                if let Role::Leader { set, waiting } = &mut b.role {
                    if !set.accepts_acks_all() {
                        return;
                    }
                    // A retried or duplicated produce is appended once (the idempotent
                    // producer's state is the log's: it moves with the partition).
                    if let Some(at) = b.log.records.iter().position(|r| r.1 == value) {
                        waiting.push((value, at as u64 + 1));
                        return;
                    }
                    let epoch = set.leader_epoch();
                    let writer = *self.checks.writers.entry(epoch).or_insert(id);
                    assert_eq!(writer, id, "two brokers append as leader of epoch {epoch}");
                    b.log.records.push((epoch, value));
                    set.on_leader_write(b.log.end());
                    waiting.push((value, b.log.end()));
                }
            }
            Msg::Fetch {
                leader_epoch,
                offset,
                durable,
            } => {
                let set = match leading_in(&mut b.role, leader_epoch) {
                    Ok(set) => set,
                    Err(refusal) => {
                        out.push((
                            from,
                            Msg::Refused {
                                leader_epoch,
                                refusal,
                            },
                        ));
                        return;
                    }
                };
                if set
                    .on_fetch(from as BrokerId, offset, durable, now_ms)
                    .is_err()
                {
                    out.push((
                        from,
                        Msg::Refused {
                            leader_epoch,
                            refusal: Refusal::OffsetOutOfRange,
                        },
                    ));
                    return;
                }
                b.log.high_watermark = set.high_watermark();
                let start = offset as usize;
                let records = b.log.records[start..(start + 5).min(b.log.records.len())].to_vec();
                out.push((
                    from,
                    Msg::Records {
                        leader_epoch,
                        offset,
                        records,
                        high_watermark: set.high_watermark(),
                    },
                ));
            }
            Msg::AskEpochEnd {
                leader_epoch,
                epoch,
            } => {
                if let Err(refusal) = leading_in(&mut b.role, leader_epoch) {
                    out.push((
                        from,
                        Msg::Refused {
                            leader_epoch,
                            refusal,
                        },
                    ));
                    return;
                }
                out.push((
                    from,
                    Msg::EpochEnd {
                        leader_epoch,
                        epoch,
                        answer: b.log.epochs().end_offset_for(epoch),
                    },
                ));
            }
            Msg::EpochEnd {
                leader_epoch,
                epoch,
                answer,
            } => {
                let epochs = b.log.epochs();
                if let Role::Follower {
                    f,
                    in_flight_since,
                    last_action,
                } = &mut b.role
                {
                    if f.leader() == Some((from as BrokerId, leader_epoch)) {
                        if let Some(action) = f.on_epoch_end(epoch, answer, &epochs) {
                            *in_flight_since = None;
                            *last_action = action;
                        }
                    }
                }
            }
            Msg::Records {
                leader_epoch,
                offset,
                records,
                high_watermark,
            } => {
                if let Role::Follower {
                    f,
                    in_flight_since,
                    last_action,
                } = &mut b.role
                {
                    if f.leader() == Some((from as BrokerId, leader_epoch))
                        && f.is_fetching()
                        && offset == b.log.end()
                    {
                        b.log.records.extend(records);
                        b.log.high_watermark = high_watermark.min(b.log.end());
                        *in_flight_since = None;
                        *last_action = Action::Fetch;
                    }
                }
            }
            Msg::Refused {
                leader_epoch,
                refusal,
            } => {
                if let Role::Follower {
                    f,
                    in_flight_since,
                    last_action,
                } = &mut b.role
                {
                    if f.leader() == Some((from as BrokerId, leader_epoch)) {
                        // None: the same again, once the request times out.
                        if let Some(action) = f.on_refusal(refusal) {
                            *in_flight_since = None;
                            *last_action = action;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn check(&mut self) {
        // Every replica serves what is below its high watermark: it must be what was
        // committed there.
        let mut served = Vec::new();
        for b in self.brokers.iter().filter(|b| b.up) {
            assert!(b.log.high_watermark <= b.log.end());
            for o in 0..b.log.high_watermark {
                served.push((o, b.log.records[o as usize].1));
            }
        }
        for (o, v) in served {
            self.commit(o, v, "served");
        }
        // Every member of the committed ISR holds every acked record.
        if let Some(p) = self.controller.image.partition(&TOPIC, 0) {
            for r in &p.state.isr {
                let b = &self.brokers[(*r - 1) as usize];
                for (&o, &v) in &self.checks.acked {
                    let held = b.log.records.get(o as usize).map(|r| r.1);
                    assert_eq!(
                        held,
                        Some(v),
                        "ISR member {r} lost acked offset {o} (log end {}, durable {})",
                        b.log.end(),
                        b.log.durable
                    );
                }
            }
        }
    }
}

/// The partition's leader state if this broker leads it in `leader_epoch`, else why not
/// (Kafka's rules for a request naming the epoch it expects).
fn leading_in(role: &mut Role, leader_epoch: i32) -> Result<&mut ReplicaSet, Refusal> {
    let Role::Leader { set, .. } = role else {
        return Err(Refusal::NotLeader);
    };
    Refusal::check_epoch(set.leader_epoch(), leader_epoch)?;
    Ok(set)
}

fn run(seed: u64, steps: u64) -> (usize, u64) {
    let mut s = Sim::new(seed);
    for _ in 0..steps {
        s.faults();
        s.restart_due(false);
        s.step(true);
    }
    s.net.heal();
    s.net.faults = Faults::NONE;
    s.restart_due(true);
    for _ in 0..1200 {
        s.step(false);
    }
    // Settled: every replica has every acked record, once and in order.
    let p = s.controller.image.partition(&TOPIC, 0).expect("the topic");
    assert_ne!(
        p.state.leader, NO_LEADER,
        "seed {seed}: a leader at the end"
    );
    assert_eq!(p.state.isr.len(), 3, "seed {seed}: all in sync at the end");
    for b in &s.brokers {
        let values: Vec<u64> = b.log.records.iter().map(|r| r.1).collect();
        for (&o, &v) in &s.checks.acked {
            assert_eq!(
                values.get(o as usize),
                Some(&v),
                "seed {seed}: broker {}",
                b.id
            );
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            values.len(),
            "seed {seed}: a value twice on {}",
            b.id
        );
    }
    let logs: Vec<&Vec<(i32, u64)>> = s.brokers.iter().map(|b| &b.log.records).collect();
    assert!(
        logs.windows(2).all(|w| w[0] == w[1]),
        "seed {seed}: replicas differ"
    );
    (s.checks.acked.len(), s.rng.next())
}

#[test]
fn no_acked_or_served_record_is_ever_lost() {
    let mut acked = 0;
    for seed in sim::seeds(40) {
        acked += run(seed, 4000).0;
    }
    assert!(
        acked > 100,
        "the runs acked only {acked} records: the test tests little"
    );
}

#[test]
fn a_seed_replays_the_same_run() {
    assert_eq!(run(5, 1500), run(5, 1500));
}
