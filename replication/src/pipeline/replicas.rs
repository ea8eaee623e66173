//! One shard's replicated partitions: for each, its role from the metadata image (leader,
//! follower, or neither) and the state machine of that role: a leader's [`ReplicaSet`] (ISR,
//! high watermark), a follower's [`Follower`] (divergence search, then fetching). The
//! Kafka side asks it whether this broker leads a partition, refuses acks=all below
//! `min.insync.replicas`, and waits on the high watermark; the sessions (`session.rs`,
//! `serve.rs`) feed it fetches and progress.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use spate_engine::{PartitionLog, ReadBatch, ReadBound};

use super::wire::{code, FetchPartition, FetchedPartition};
use crate::divergence::{EpochEnd, EpochHistory};
use crate::follower::{Action, Follower, Refusal};
use crate::isr::{AckState, FetchError, IsrConfig, Leadership, ReplicaSet};
use crate::metadata::{BrokerId, PartitionImage, TopicId, NO_LEADER};
use crate::node::{NodeHandle, Reply, Request, RequestError};

pub type PartitionKey = (TopicId, u32);

/// A log's epoch history as the divergence search reads it.
pub struct LogHistory<'a>(pub &'a PartitionLog);

impl EpochHistory for LogHistory<'_> {
    fn latest_epoch(&self) -> Option<i32> {
        self.0.leader_epochs().last().map(|e| e.epoch)
    }

    fn end_offset_for(&self, epoch: i32) -> EpochEnd {
        self.0.end_offset_for_epoch(epoch)
    }
}

pub(crate) enum Role {
    /// This broker leads a partition with other replicas.
    Leader {
        set: ReplicaSet,
        alter_in_flight: bool,
        /// After a refusal, the next ISR change waits until then (ms).
        retry_at: u64,
    },
    /// This broker is the only replica: the log keeps its own high watermark (its end), as
    /// on a single broker.
    Single,
    Follower {
        follower: Follower,
        /// What to do next, as the follower state machine last said.
        next: Action,
        /// The leader's shard index serving this partition.
        leader_shard: u32,
    },
    /// No leader, or this broker is not a replica.
    Offline,
}

pub(crate) struct Replica {
    pub name: String,
    pub log: PartitionLog,
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub role: Role,
    /// The log's high watermark is managed (it was a leader or follower with others).
    pub managed: bool,
}

/// What a change of metadata made of a partition here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Unchanged,
    /// This broker now leads it: state kept per leader (idempotent producers) is rebuilt
    /// from the log.
    BecameLeader,
    BecameFollower,
    Offline,
}

/// Whether this broker leads a partition, as a produce or a consumer fetch asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leading {
    Yes {
        leader_epoch: i32,
        /// Other replicas exist: acks=all waits for the high watermark.
        replicated: bool,
    },
    No {
        leader: Option<BrokerId>,
        leader_epoch: i32,
    },
    /// Not a partition of this shard.
    Unknown,
}

/// Why an acks=all produce is refused or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    pub code: i16,
    pub message: String,
}

/// How long a leader waits after the controller refused an ISR change before it asks again.
const ALTER_RETRY_MS: u64 = 1_000;

pub const NOT_ENOUGH_REPLICAS: i16 = 19;
pub const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;

pub(crate) struct State {
    pub partitions: HashMap<PartitionKey, Replica>,
    pub names: HashMap<(String, u32), PartitionKey>,
    /// Follower sessions running, by (leader, leader's shard).
    pub sessions: BTreeMap<(BrokerId, u32), ()>,
}

pub struct ShardReplicas {
    pub(crate) me: BrokerId,
    pub(crate) shard: u32,
    pub(crate) cluster_id: [u8; 16],
    pub(crate) node: NodeHandle,
    pub(crate) state: RefCell<State>,
    pub(crate) stopped: Cell<bool>,
    /// `replica.lag.time.max.ms`.
    pub(crate) replica_lag_time_max_ms: u64,
    started: Instant,
}

impl ShardReplicas {
    pub fn new(
        me: BrokerId,
        shard: u32,
        cluster_id: [u8; 16],
        node: NodeHandle,
        replica_lag_time_max_ms: u64,
    ) -> Rc<Self> {
        Rc::new(ShardReplicas {
            me,
            shard,
            cluster_id,
            node,
            state: RefCell::new(State {
                partitions: HashMap::new(),
                names: HashMap::new(),
                sessions: BTreeMap::new(),
            }),
            stopped: Cell::new(false),
            replica_lag_time_max_ms,
            started: Instant::now(),
        })
    }

    pub fn me(&self) -> BrokerId {
        self.me
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Stops the sessions and the tick (at shutdown).
    pub fn stop(&self) {
        self.stopped.set(true);
    }

    /// The metadata says `p` is the state of partition `key` (named `name`), whose log on
    /// this shard is `log`. Returns what changed for this broker.
    pub fn apply(
        &self,
        key: PartitionKey,
        name: &str,
        log: PartitionLog,
        p: &PartitionImage,
        min_insync_replicas: usize,
    ) -> Transition {
        let config = IsrConfig {
            replica_lag_time_max_ms: self.replica_lag_time_max_ms,
            min_insync_replicas: min_insync_replicas.max(1),
        };
        let now = self.now_ms();
        let mut st = self.state.borrow_mut();
        st.names.insert((name.to_string(), key.1), key);
        let s = &p.state;
        if let Some(r) = st.partitions.get_mut(&key) {
            if r.leader == s.leader
                && r.leader_epoch == s.leader_epoch
                && r.replicas == p.assignment.replicas
            {
                r.isr = s.isr.clone();
                r.partition_epoch = s.partition_epoch;
                if let Role::Leader { set, .. } = &mut r.role {
                    set.set_config(config);
                    if set.on_isr_committed(s.isr.clone(), s.partition_epoch) {
                        let _ = r.log.advance_high_watermark(set.high_watermark());
                    }
                }
                return Transition::Unchanged;
            }
        }
        let managed = st.partitions.get(&key).is_some_and(|r| r.managed);
        let leader_shard = self.leader_shard(s.leader, p.assignment.shard);
        let mut r = Replica {
            name: name.to_string(),
            log,
            leader: s.leader,
            leader_epoch: s.leader_epoch,
            partition_epoch: s.partition_epoch,
            replicas: p.assignment.replicas.clone(),
            isr: s.isr.clone(),
            role: Role::Offline,
            managed,
        };
        let transition = if s.leader == self.me {
            if p.assignment.replicas == [self.me] && !managed {
                r.role = Role::Single;
            } else {
                let o = r.log.offsets();
                // A log whose high watermark was its end knows nothing of what the others
                // hold: start from nothing, the followers' first fetches raise it.
                let hw = if managed { o.high_watermark } else { 0 };
                r.log.manage_high_watermark(hw);
                r.managed = true;
                let set = ReplicaSet::new(
                    Leadership {
                        me: self.me,
                        leader_epoch: s.leader_epoch,
                        partition_epoch: s.partition_epoch,
                        replicas: r.replicas.clone(),
                        isr: s.isr.clone(),
                        log_end: o.log_end,
                        durable: o.durable,
                        high_watermark: hw,
                    },
                    config,
                    now,
                );
                r.role = Role::Leader {
                    set,
                    alter_in_flight: false,
                    retry_at: 0,
                };
            }
            // The leader writes the cold tier (if the topic has one) in its epoch.
            r.log.set_tier_role(spate_engine::TierRole::Leader {
                epoch: s.leader_epoch,
            });
            tracing::info!(topic = %name, partition = key.1, leader_epoch = s.leader_epoch, isr = ?s.isr, "leading the partition");
            Transition::BecameLeader
        } else if s.leader != NO_LEADER && r.replicas.contains(&self.me) {
            r.log.set_tier_role(spate_engine::TierRole::Follower);
            let hw = r.log.offsets().high_watermark;
            r.log.manage_high_watermark(if managed { hw } else { 0 });
            r.managed = true;
            let mut follower = Follower::new(self.me);
            let next = follower
                .on_leadership(Some(s.leader), s.leader_epoch, &LogHistory(&r.log))
                .unwrap_or(Action::Fetch);
            r.role = Role::Follower {
                follower,
                next,
                leader_shard,
            };
            tracing::info!(topic = %name, partition = key.1, leader = s.leader, leader_epoch = s.leader_epoch, "following the partition");
            Transition::BecameFollower
        } else {
            r.log.set_tier_role(spate_engine::TierRole::Follower);
            if r.replicas.contains(&self.me) {
                tracing::warn!(topic = %name, partition = key.1, "the partition has no leader: offline until one of its replicas can lead");
            }
            Transition::Offline
        };
        st.partitions.insert(key, r);
        transition
    }

    /// The partition is no longer on this broker (deleted, or moved away).
    pub fn remove(&self, key: PartitionKey) {
        let mut st = self.state.borrow_mut();
        if let Some(r) = st.partitions.remove(&key) {
            st.names.remove(&(r.name, key.1));
        }
    }

    /// The partitions of this shard, by key.
    pub fn keys(&self) -> Vec<PartitionKey> {
        self.state.borrow().partitions.keys().copied().collect()
    }

    fn leader_shard(&self, leader: BrokerId, shard: u32) -> u32 {
        let view = self.node.view();
        let shards = view
            .image
            .brokers
            .get(&leader)
            .map_or(1, |b| b.registration.shards.max(1));
        shard % shards
    }

    /// Whether this broker leads `name`-`partition`.
    pub fn leading(&self, name: &str, partition: u32) -> Leading {
        let st = self.state.borrow();
        let Some(r) = st
            .names
            .get(&(name.to_string(), partition))
            .and_then(|k| st.partitions.get(k))
        else {
            return Leading::Unknown;
        };
        match &r.role {
            Role::Leader { .. } => Leading::Yes {
                leader_epoch: r.leader_epoch,
                replicated: true,
            },
            Role::Single => Leading::Yes {
                leader_epoch: r.leader_epoch,
                replicated: false,
            },
            Role::Follower { .. } | Role::Offline => Leading::No {
                leader: (r.leader != NO_LEADER).then_some(r.leader),
                leader_epoch: r.leader_epoch,
            },
        }
    }

    /// acks=all may be appended now: the ISR has at least `min.insync.replicas` members.
    pub fn check_acks_all(&self, name: &str, partition: u32) -> Result<(), AckError> {
        let st = self.state.borrow();
        let Some(r) = st
            .names
            .get(&(name.to_string(), partition))
            .and_then(|k| st.partitions.get(k))
        else {
            return Ok(());
        };
        if let Role::Leader { set, .. } = &r.role {
            if !set.accepts_acks_all() {
                return Err(AckError {
                    code: NOT_ENOUGH_REPLICAS,
                    message: format!(
                        "the in-sync replicas {:?} are fewer than min.insync.replicas={}",
                        set.isr(),
                        set.config().min_insync_replicas
                    ),
                });
            }
        }
        Ok(())
    }

    /// The leader's own log moved (an append written or synced): the high watermark may.
    pub fn on_leader_progress(&self, name: &str, partition: u32) {
        let mut st = self.state.borrow_mut();
        let Some(key) = st.names.get(&(name.to_string(), partition)).copied() else {
            return;
        };
        if let Some(r) = st.partitions.get_mut(&key) {
            if let Role::Leader { set, .. } = &mut r.role {
                sync_leader(set, &r.log);
            }
        }
    }

    /// Waits until an acks=all batch ending (exclusive) at `end`, appended in `leader_epoch`,
    /// is below the high watermark; an error if leadership moves or the ISR shrank below
    /// `min.insync.replicas` meanwhile. The caller bounds the wait by the request's timeout.
    pub async fn wait_acks_all(
        &self,
        name: &str,
        partition: u32,
        leader_epoch: i32,
        end: u64,
    ) -> Result<(), AckError> {
        loop {
            let log = {
                let mut st = self.state.borrow_mut();
                let Some(key) = st.names.get(&(name.to_string(), partition)).copied() else {
                    return Err(not_leader());
                };
                let Some(r) = st.partitions.get_mut(&key) else {
                    return Err(not_leader());
                };
                let Role::Leader { set, .. } = &mut r.role else {
                    return Err(not_leader());
                };
                if r.leader_epoch != leader_epoch {
                    return Err(not_leader());
                }
                sync_leader(set, &r.log);
                match set.ack_state(end) {
                    AckState::Acked => return Ok(()),
                    AckState::NotEnoughReplicasAfterAppend => {
                        return Err(AckError {
                            code: NOT_ENOUGH_REPLICAS_AFTER_APPEND,
                            message: format!(
                                "written, but the in-sync replicas {:?} are fewer than min.insync.replicas={}",
                                set.isr(),
                                set.config().min_insync_replicas
                            ),
                        })
                    }
                    AckState::Waiting => r.log.clone(),
                }
            };
            // Woken by the high watermark; the timer re-checks the leadership.
            let wait = log.wait_for(end.saturating_sub(1), ReadBound::HighWatermark);
            let timer = glommio::timer::sleep(Duration::from_millis(100));
            futures_util::future::select(Box::pin(wait), Box::pin(timer)).await;
        }
    }

    /// A follower's fetch of one partition, as its leader serves it: checks, records the
    /// fetch (ISR, high watermark) on the first pass, then reads from the log end asked.
    pub(crate) async fn fetch_one(
        &self,
        follower: BrokerId,
        fp: &FetchPartition,
        max_bytes: usize,
        first: bool,
    ) -> (FetchedPartition, Vec<ReadBatch>) {
        let mut out = FetchedPartition {
            topic_id: fp.topic_id,
            partition: fp.partition,
            error: code::NONE,
            high_watermark: 0,
            log_start: 0,
            log_end: 0,
            batches: Vec::new(),
        };
        let log = {
            let mut st = self.state.borrow_mut();
            let Some(r) = st.partitions.get_mut(&(fp.topic_id, fp.partition)) else {
                out.error = code::NOT_LEADER_OR_FOLLOWER;
                return (out, Vec::new());
            };
            let Role::Leader { set, .. } = &mut r.role else {
                out.error = code::NOT_LEADER_OR_FOLLOWER;
                return (out, Vec::new());
            };
            if let Err(refusal) = Refusal::check_epoch(set.leader_epoch(), fp.leader_epoch) {
                if first {
                    spate_engine::warn_limited!("replica fetch: another leader epoch", follower, topic_id = ?fp.topic_id, partition = fp.partition, "refused a replica fetch in leader epoch {} ({refusal:?}): this partition is in epoch {}", fp.leader_epoch, set.leader_epoch());
                }
                out.error = refusal_code(refusal);
                return (out, Vec::new());
            }
            if first {
                sync_leader(set, &r.log);
                match set.on_fetch(follower, fp.fetch_offset, fp.durable, self.now_ms()) {
                    Ok(moved) => {
                        if moved {
                            let _ = r.log.advance_high_watermark(set.high_watermark());
                        }
                    }
                    Err(FetchError::NotAReplica(_)) => {
                        out.error = code::NOT_LEADER_OR_FOLLOWER;
                        return (out, Vec::new());
                    }
                    Err(FetchError::OffsetOutOfRange { .. }) => {
                        out.error = code::OFFSET_OUT_OF_RANGE;
                        return (out, Vec::new());
                    }
                }
            }
            r.log.clone()
        };
        let local_start = log.offsets().local_start;
        if log.has_tier() && fp.fetch_offset < local_start {
            // What the leader holds only in the tier a follower does not copy: it starts at
            // the leader's local start and reads the tier's manifest for the rest.
            out.error = code::OFFSET_MOVED_TO_TIERED_STORAGE;
            out.log_start = local_start;
            return (out, Vec::new());
        }
        let batches = match log
            .read_to(fp.fetch_offset, max_bytes, ReadBound::LogEnd)
            .await
        {
            Ok(b) => b,
            Err(spate_engine::EngineError::OffsetOutOfRange { .. }) => {
                out.error = code::OFFSET_OUT_OF_RANGE;
                Vec::new()
            }
            Err(e) => {
                spate_engine::warn_limited!("replica fetch: read failed", topic_id = ?fp.topic_id, partition = fp.partition, "a follower's fetch cannot be read: {e}");
                out.error = code::KAFKA_STORAGE_ERROR;
                Vec::new()
            }
        };
        let o = log.offsets();
        out.high_watermark = o.high_watermark;
        out.log_start = o.log_start;
        out.log_end = o.log_end;
        (out, batches)
    }

    /// The log of a partition this shard leads, to wait on.
    pub(crate) fn leader_log(&self, key: &PartitionKey) -> Option<PartitionLog> {
        let st = self.state.borrow();
        let r = st.partitions.get(key)?;
        matches!(r.role, Role::Leader { .. }).then(|| r.log.clone())
    }

    /// A follower's progress report: its log end and durable end moved.
    pub(crate) fn on_progress(&self, follower: BrokerId, fp: &FetchPartition) {
        let mut st = self.state.borrow_mut();
        let Some(r) = st.partitions.get_mut(&(fp.topic_id, fp.partition)) else {
            return;
        };
        let Role::Leader { set, .. } = &mut r.role else {
            return;
        };
        if set.leader_epoch() != fp.leader_epoch {
            return;
        }
        sync_leader(set, &r.log);
        if let Ok(true) = set.on_fetch(follower, fp.fetch_offset, fp.durable, self.now_ms()) {
            let _ = r.log.advance_high_watermark(set.high_watermark());
        }
    }

    /// OffsetsForLeaderEpoch from a follower: where `epoch` ends in this leader's log.
    pub(crate) fn epoch_end(
        &self,
        key: &PartitionKey,
        current_leader_epoch: i32,
        epoch: i32,
    ) -> (i16, EpochEnd) {
        let st = self.state.borrow();
        let Some(r) = st.partitions.get(key) else {
            return (code::NOT_LEADER_OR_FOLLOWER, None);
        };
        let Role::Leader { set, .. } = &r.role else {
            return (code::NOT_LEADER_OR_FOLLOWER, None);
        };
        if let Err(refusal) = Refusal::check_epoch(set.leader_epoch(), current_leader_epoch) {
            return (refusal_code(refusal), None);
        }
        (code::NONE, r.log.end_offset_for_epoch(epoch))
    }

    /// Every 10 ms: leaders bring their high watermark up to date, ask for ISR changes and
    /// for their own fdatasync when followers are ahead of it; followers get a session to
    /// their leader.
    pub(crate) fn tick(self: &Rc<Self>) {
        let now = self.now_ms();
        let mut alters = Vec::new();
        let mut sessions = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            for (key, r) in st.partitions.iter_mut() {
                match &mut r.role {
                    Role::Leader {
                        set,
                        alter_in_flight,
                        retry_at,
                    } => {
                        sync_leader(set, &r.log);
                        if set.followers_ahead_of_leader() {
                            r.log.request_sync();
                        }
                        if !*alter_in_flight && now >= *retry_at {
                            if let Some(change) = set.propose(now) {
                                *alter_in_flight = true;
                                tracing::info!(topic = %r.name, partition = key.1, from = ?set.isr(), to = ?change.new_isr, "asking the controller to change the in-sync replicas");
                                alters.push((*key, change));
                            }
                        }
                    }
                    Role::Follower { leader_shard, .. } => {
                        sessions.push((r.leader, *leader_shard));
                    }
                    Role::Single | Role::Offline => {}
                }
            }
            sessions.retain(|s| !st.sessions.contains_key(s));
            sessions.sort_unstable();
            sessions.dedup();
            for s in &sessions {
                st.sessions.insert(*s, ());
            }
        }
        for (leader, shard) in sessions {
            glommio::spawn_local(super::session::run(self.clone(), leader, shard)).detach();
        }
        for (key, change) in alters {
            let me = self.clone();
            glommio::spawn_local(async move {
                let reply = me
                    .node
                    .call(Request::AlterPartition {
                        broker_id: me.me,
                        broker_epoch: 0,
                        topic_id: key.0,
                        partition: key.1,
                        leader_epoch: change.leader_epoch,
                        partition_epoch: change.partition_epoch,
                        new_isr: change.new_isr.clone(),
                    })
                    .await;
                let mut st = me.state.borrow_mut();
                if let Some(r) = st.partitions.get_mut(&key) {
                    if let Role::Leader {
                        set,
                        alter_in_flight,
                        retry_at,
                    } = &mut r.role
                    {
                        *alter_in_flight = false;
                        if let Reply::Refused(e) = reply {
                            tracing::info!(topic = %r.name, partition = key.1, "the controller refused the ISR change: {e}");
                            if set.partition_epoch() == change.partition_epoch {
                                match e {
                                    // It may still commit (a controller that lost its
                                    // leadership, or no answer in time).
                                    RequestError::NotController | RequestError::Timeout(_) => {
                                        set.on_isr_rejected()
                                    }
                                    _ => set.on_isr_refused(),
                                }
                            }
                            *retry_at = me.now_ms() + ALTER_RETRY_MS;
                        }
                    }
                }
            })
            .detach();
        }
    }

    /// Runs the tick until stopped.
    pub async fn run_ticks(self: Rc<Self>) {
        while !self.stopped.get() {
            self.tick();
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The ISR, high watermark and role of each partition here, for the operator.
    pub fn describe(&self, name: &str, partition: u32) -> Option<(Leading, u64)> {
        let leading = self.leading(name, partition);
        let st = self.state.borrow();
        let r = st
            .names
            .get(&(name.to_string(), partition))
            .and_then(|k| st.partitions.get(k))?;
        Some((leading, r.log.offsets().high_watermark))
    }
}

/// Feeds the leader's own log end and durable end to its replica set, and the high
/// watermark that results to the log.
pub(crate) fn sync_leader(set: &mut ReplicaSet, log: &PartitionLog) {
    let o = log.offsets();
    set.on_leader_write(o.log_end);
    set.on_leader_durable(o.durable);
    // Also when the set moved it by itself (an ISR commit or refusal): never backwards.
    if set.high_watermark() > o.high_watermark {
        let _ = log.advance_high_watermark(set.high_watermark());
    }
}

fn not_leader() -> AckError {
    AckError {
        code: code::NOT_LEADER_OR_FOLLOWER,
        message: "this broker no longer leads the partition".into(),
    }
}

pub(crate) fn refusal_code(r: Refusal) -> i16 {
    r.code()
}

pub(crate) fn code_refusal(c: i16) -> Option<Refusal> {
    match c {
        code::FENCED_LEADER_EPOCH => Some(Refusal::FencedLeaderEpoch),
        code::UNKNOWN_LEADER_EPOCH => Some(Refusal::UnknownLeaderEpoch),
        code::OFFSET_OUT_OF_RANGE => Some(Refusal::OffsetOutOfRange),
        _ => Some(Refusal::NotLeader),
    }
}
