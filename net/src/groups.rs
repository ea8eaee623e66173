//! Consumer group coordination (the classic protocol): membership, rebalances with join and
//! sync barriers, heartbeats and session timeouts, and the committed offsets of each group.
//! A group lives on the shard that owns its `__consumer_offsets` partition; every request
//! for it runs there, so nothing here is shared or locked.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use crate::cluster::NetConfig;

pub const NONE: i16 = 0;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const INVALID_GROUP_ID: i16 = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_seen: Instant,
    joined: bool,
}

/// What a member learns when a rebalance's join phase ends.
#[derive(Debug, Clone)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader: every member and its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    fn error(error: i16, member_id: &str) -> Self {
        Self {
            error,
            generation: -1,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Bytes,
}

#[derive(Debug)]
pub struct Group {
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub members: BTreeMap<String, Member>,
    join_waiters: HashMap<String, oneshot::Sender<JoinOutcome>>,
    sync_waiters: HashMap<String, oneshot::Sender<SyncOutcome>>,
    /// When the join phase ends even if some members have not rejoined.
    join_deadline: Option<Instant>,
    /// A new group's join phase waits at least until then for more members.
    initial_delay_until: Option<Instant>,
}

impl Group {
    fn new() -> Self {
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            join_waiters: HashMap::new(),
            sync_waiters: HashMap::new(),
            join_deadline: None,
            initial_delay_until: None,
        }
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// A group's committed offsets by (topic, partition).
pub type GroupOffsets = BTreeMap<(String, i32), Committed>;

pub struct JoinRequest {
    pub group: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

pub struct Coordinator {
    groups: RefCell<HashMap<String, Group>>,
    offsets: RefCell<HashMap<String, GroupOffsets>>,
    initial_delay: Duration,
    min_session: i32,
    max_session: i32,
    next_member: Cell<u64>,
    ticking: Cell<bool>,
}

impl Coordinator {
    pub fn new(config: &NetConfig) -> Self {
        Self {
            groups: RefCell::new(HashMap::new()),
            offsets: RefCell::new(HashMap::new()),
            initial_delay: Duration::from_millis(config.group_initial_rebalance_delay_ms),
            min_session: config.group_min_session_timeout_ms,
            max_session: config.group_max_session_timeout_ms,
            next_member: Cell::new(0),
            ticking: Cell::new(false),
        }
    }

    /// Starts the timer that ends join phases and expires silent members.
    pub fn start_ticking(self: &Rc<Self>) {
        if self.ticking.replace(true) {
            return;
        }
        let me = Rc::downgrade(self);
        glommio::spawn_local(async move {
            loop {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                let Some(c) = me.upgrade() else { break };
                c.tick(Instant::now());
            }
        })
        .detach();
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.next_member.get();
        self.next_member.set(n + 1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let prefix = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        format!("{prefix}-{nanos:x}-{n}")
    }

    /// JoinGroup: resolves when the group's join phase ends.
    pub async fn join(&self, req: JoinRequest) -> JoinOutcome {
        if req.group.is_empty() {
            return JoinOutcome::error(INVALID_GROUP_ID, &req.member_id);
        }
        if req.session_timeout_ms < self.min_session || req.session_timeout_ms > self.max_session {
            return JoinOutcome::error(INVALID_SESSION_TIMEOUT, &req.member_id);
        }
        let rx = {
            let mut groups = self.groups.borrow_mut();
            let g = groups.entry(req.group.clone()).or_insert_with(Group::new);
            if !g.members.is_empty() {
                let compatible = g.protocol_type == req.protocol_type
                    && req.protocols.iter().any(|(name, _)| {
                        g.members
                            .values()
                            .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                    });
                if !compatible {
                    return JoinOutcome::error(INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
                }
            }
            let member_id = if req.member_id.is_empty() {
                // A static member keeps its place under a new id.
                let existing = req.group_instance_id.as_ref().and_then(|gi| {
                    g.members
                        .values()
                        .find(|m| m.group_instance_id.as_ref() == Some(gi))
                        .map(|m| m.id.clone())
                });
                if let Some(old) = existing {
                    g.members.remove(&old);
                    if let Some(w) = g.join_waiters.remove(&old) {
                        let _ = w.send(JoinOutcome::error(UNKNOWN_MEMBER_ID, &old));
                    }
                }
                self.new_member_id(&req.client_id)
            } else if g.members.contains_key(&req.member_id) {
                req.member_id.clone()
            } else {
                return JoinOutcome::error(UNKNOWN_MEMBER_ID, &req.member_id);
            };
            let now = Instant::now();
            let assignment = g
                .members
                .get(&member_id)
                .filter(|m| m.protocols == req.protocols)
                .map(|m| m.assignment.clone())
                .unwrap_or_default();
            let member = Member {
                id: member_id.clone(),
                group_instance_id: req.group_instance_id.clone(),
                client_id: req.client_id.clone(),
                client_host: req.client_host.clone(),
                session_timeout: Duration::from_millis(req.session_timeout_ms as u64),
                rebalance_timeout: Duration::from_millis(req.rebalance_timeout_ms.max(0) as u64),
                protocols: req.protocols.clone(),
                // A member rejoining unchanged keeps what it was assigned (SyncGroup in a
                // stable group answers with it).
                assignment,
                last_seen: now,
                joined: true,
            };
            let changed = g
                .members
                .get(&member_id)
                .is_none_or(|m| m.protocols != member.protocols);
            if g.members.is_empty() {
                g.protocol_type = req.protocol_type.clone();
            }
            g.members.insert(member_id.clone(), member);
            let (tx, rx) = oneshot::channel();
            if let Some(old) = g.join_waiters.insert(member_id.clone(), tx) {
                let _ = old.send(JoinOutcome::error(UNKNOWN_MEMBER_ID, &member_id));
            }
            tracing::debug!(group = %req.group, member = %member_id, state = g.state.name(), changed, generation = g.generation, "join");
            match g.state {
                GroupState::Stable if !changed && member_id == g.leader => {
                    self.prepare_rebalance(g, now);
                }
                // As Kafka: a follower rejoining a stable group with nothing new, or any member
                // rejoining unchanged between join and sync (it may have missed the join
                // answer), gets the current generation back and goes on to SyncGroup.
                GroupState::Stable | GroupState::CompletingRebalance if !changed => {
                    let outcome = self.join_outcome(g, &member_id);
                    if let Some(w) = g.join_waiters.remove(&member_id) {
                        let _ = w.send(outcome);
                    }
                }
                GroupState::PreparingRebalance => {}
                _ => self.prepare_rebalance(g, now),
            }
            self.maybe_complete_join(g, now);
            rx
        };
        rx.await
            .unwrap_or_else(|_| JoinOutcome::error(REBALANCE_IN_PROGRESS, &req.member_id))
    }

    fn prepare_rebalance(&self, g: &mut Group, now: Instant) {
        let was_empty = g.state == GroupState::Empty;
        g.state = GroupState::PreparingRebalance;
        for (id, w) in g.sync_waiters.drain() {
            let _ = w.send(SyncOutcome {
                error: REBALANCE_IN_PROGRESS,
                protocol_type: g.protocol_type.clone(),
                protocol: String::new(),
                assignment: Bytes::new(),
            });
            if let Some(m) = g.members.get_mut(&id) {
                m.joined = false;
            }
        }
        for m in g.members.values_mut() {
            if !g.join_waiters.contains_key(&m.id) {
                m.joined = false;
            }
        }
        let timeout = g
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(30));
        g.join_deadline = Some(now + timeout);
        g.initial_delay_until = was_empty.then(|| now + self.initial_delay);
    }

    fn maybe_complete_join(&self, g: &mut Group, now: Instant) {
        if g.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = g.members.values().all(|m| m.joined);
        let delay_over = g.initial_delay_until.is_none_or(|t| now >= t);
        let deadline = g.join_deadline.is_some_and(|t| now >= t);
        if (all_joined && delay_over) || deadline {
            self.complete_join(g);
        }
    }

    fn complete_join(&self, g: &mut Group) {
        // Members that did not rejoin in time are out.
        let gone: Vec<String> = g
            .members
            .values()
            .filter(|m| !m.joined)
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            g.members.remove(&id);
        }
        g.generation += 1;
        g.join_deadline = None;
        g.initial_delay_until = None;
        if g.members.is_empty() {
            g.state = GroupState::Empty;
            g.leader.clear();
            g.protocol.clear();
            return;
        }
        if !g.members.contains_key(&g.leader) {
            g.leader = g.members.keys().next().cloned().unwrap_or_default();
        }
        // The leader's first preference that every member supports.
        let leader_protocols = g
            .members
            .get(&g.leader)
            .map(|m| m.protocols.clone())
            .unwrap_or_default();
        g.protocol = leader_protocols
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| {
                g.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(p, _)| p == n))
            })
            .unwrap_or_default();
        g.state = GroupState::CompletingRebalance;
        for m in g.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_seen = Instant::now();
        }
        let waiters: Vec<(String, oneshot::Sender<JoinOutcome>)> = g.join_waiters.drain().collect();
        for (id, w) in waiters {
            let outcome = self.join_outcome(g, &id);
            let _ = w.send(outcome);
        }
        tracing::info!(
            generation = g.generation,
            members = g.members.len(),
            protocol = %g.protocol,
            "group rebalanced"
        );
    }

    fn join_outcome(&self, g: &Group, member_id: &str) -> JoinOutcome {
        let members = if member_id == g.leader {
            g.members
                .values()
                .map(|m| {
                    let meta = m
                        .protocols
                        .iter()
                        .find(|(n, _)| *n == g.protocol)
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    (m.id.clone(), m.group_instance_id.clone(), meta)
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinOutcome {
            error: NONE,
            generation: g.generation,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            leader: g.leader.clone(),
            member_id: member_id.to_string(),
            members,
        }
    }

    /// SyncGroup: the leader hands out assignments; everyone gets theirs.
    pub async fn sync(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> SyncOutcome {
        let err = |error| SyncOutcome {
            error,
            protocol_type: String::new(),
            protocol: String::new(),
            assignment: Bytes::new(),
        };
        tracing::debug!(
            group,
            member = member_id,
            generation,
            leader_assignments = assignments.len(),
            "sync"
        );
        let rx = {
            let mut groups = self.groups.borrow_mut();
            let Some(g) = groups.get_mut(group) else {
                return err(UNKNOWN_MEMBER_ID);
            };
            let Some(m) = g.members.get_mut(member_id) else {
                return err(UNKNOWN_MEMBER_ID);
            };
            m.last_seen = Instant::now();
            if generation != g.generation {
                return err(ILLEGAL_GENERATION);
            }
            match g.state {
                GroupState::PreparingRebalance | GroupState::Empty => {
                    return err(REBALANCE_IN_PROGRESS)
                }
                GroupState::Stable => {
                    return SyncOutcome {
                        error: NONE,
                        protocol_type: g.protocol_type.clone(),
                        protocol: g.protocol.clone(),
                        assignment: m.assignment.clone(),
                    };
                }
                GroupState::CompletingRebalance => {}
            }
            let (tx, rx) = oneshot::channel();
            g.sync_waiters.insert(member_id.to_string(), tx);
            if member_id == g.leader {
                for (id, a) in assignments {
                    if let Some(m) = g.members.get_mut(&id) {
                        m.assignment = a;
                    }
                }
                g.state = GroupState::Stable;
                for (id, w) in g.sync_waiters.drain() {
                    let assignment = g
                        .members
                        .get(&id)
                        .map(|m| m.assignment.clone())
                        .unwrap_or_default();
                    let _ = w.send(SyncOutcome {
                        error: NONE,
                        protocol_type: g.protocol_type.clone(),
                        protocol: g.protocol.clone(),
                        assignment,
                    });
                }
            }
            rx
        };
        rx.await.unwrap_or_else(|_| err(REBALANCE_IN_PROGRESS))
    }

    /// The group's state if `member_id` is a member of generation `generation` (and notes
    /// that the member is alive); otherwise the error to answer.
    fn current_member(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<GroupState, i16> {
        let mut groups = self.groups.borrow_mut();
        let g = groups.get_mut(group).ok_or(UNKNOWN_MEMBER_ID)?;
        let (state, gen) = (g.state, g.generation);
        let m = g.members.get_mut(member_id).ok_or(UNKNOWN_MEMBER_ID)?;
        m.last_seen = Instant::now();
        if generation != gen {
            return Err(ILLEGAL_GENERATION);
        }
        Ok(state)
    }

    pub fn heartbeat(&self, group: &str, member_id: &str, generation: i32) -> i16 {
        let r = match self.current_member(group, member_id, generation) {
            Ok(GroupState::PreparingRebalance) => REBALANCE_IN_PROGRESS,
            Ok(_) => NONE,
            Err(e) => e,
        };
        if r != NONE {
            tracing::debug!(
                group,
                member = member_id,
                generation,
                error = r,
                "heartbeat refused"
            );
        }
        r
    }

    /// LeaveGroup for each member id (or static instance id); returns an error per member.
    pub fn leave(&self, group: &str, members: &[(String, Option<String>)]) -> Vec<i16> {
        let mut groups = self.groups.borrow_mut();
        let Some(g) = groups.get_mut(group) else {
            return members.iter().map(|_| UNKNOWN_MEMBER_ID).collect();
        };
        let mut out = Vec::new();
        let mut left = false;
        for (id, instance) in members {
            let found = if id.is_empty() {
                instance.as_ref().and_then(|gi| {
                    g.members
                        .values()
                        .find(|m| m.group_instance_id.as_ref() == Some(gi))
                        .map(|m| m.id.clone())
                })
            } else {
                g.members.contains_key(id).then(|| id.clone())
            };
            match found {
                Some(id) => {
                    g.members.remove(&id);
                    g.join_waiters.remove(&id);
                    g.sync_waiters.remove(&id);
                    left = true;
                    out.push(NONE);
                }
                None => out.push(UNKNOWN_MEMBER_ID),
            }
        }
        if left {
            self.after_departure(g);
        }
        out
    }

    fn after_departure(&self, g: &mut Group) {
        let now = Instant::now();
        if g.members.is_empty() {
            g.state = GroupState::Empty;
            g.generation += 1;
            g.leader.clear();
            g.protocol.clear();
            g.join_deadline = None;
            g.initial_delay_until = None;
            return;
        }
        if g.state != GroupState::PreparingRebalance {
            self.prepare_rebalance(g, now);
            g.initial_delay_until = None;
        }
        self.maybe_complete_join(g, now);
    }

    fn tick(&self, now: Instant) {
        let mut groups = self.groups.borrow_mut();
        for (name, g) in groups.iter_mut() {
            // Members waiting in a join are alive; the rest must have been seen lately.
            let expired: Vec<String> = g
                .members
                .values()
                .filter(|m| {
                    !g.join_waiters.contains_key(&m.id)
                        && now.duration_since(m.last_seen) > m.session_timeout
                })
                .map(|m| m.id.clone())
                .collect();
            if !expired.is_empty() {
                for id in &expired {
                    tracing::info!(group = %name, member = %id, "member session expired");
                    g.members.remove(id);
                    g.sync_waiters.remove(id);
                }
                self.after_departure(g);
            }
            self.maybe_complete_join(g, now);
        }
    }

    /// Checks that a commit comes from a current member (or from outside any group).
    pub fn check_commit(&self, group: &str, member_id: &str, generation: i32) -> i16 {
        // A commit from outside any group (no generation, no member), or without a
        // generation to a group that does not exist, is stored as it is.
        let outside =
            generation < 0 && (member_id.is_empty() || !self.groups.borrow().contains_key(group));
        let r = if outside {
            NONE
        } else {
            match self.current_member(group, member_id, generation) {
                // As Kafka: while a rebalance is prepared, members of the current generation
                // may still commit (that is how they hand over the partitions they give up);
                // between join and sync the generation is new and assignments are unknown.
                Ok(GroupState::CompletingRebalance) => REBALANCE_IN_PROGRESS,
                Ok(_) => NONE,
                Err(e) => e,
            }
        };
        if r != NONE {
            tracing::debug!(
                group,
                member = member_id,
                generation,
                error = r,
                "commit refused"
            );
        }
        r
    }

    pub fn apply_commit(&self, group: &str, topic: &str, partition: i32, c: Option<Committed>) {
        let mut offsets = self.offsets.borrow_mut();
        match c {
            Some(c) => {
                offsets
                    .entry(group.to_string())
                    .or_default()
                    .insert((topic.to_string(), partition), c);
            }
            None => {
                if let Some(g) = offsets.get_mut(group) {
                    g.remove(&(topic.to_string(), partition));
                    if g.is_empty() {
                        offsets.remove(group);
                    }
                }
            }
        }
    }

    pub fn committed(&self, group: &str) -> GroupOffsets {
        self.offsets
            .borrow()
            .get(group)
            .cloned()
            .unwrap_or_default()
    }

    /// Every group this shard coordinates: with members or with committed offsets.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups = self.groups.borrow();
        let mut out: BTreeMap<String, (String, GroupState)> = groups
            .iter()
            .map(|(n, g)| (n.clone(), (g.protocol_type.clone(), g.state)))
            .collect();
        for name in self.offsets.borrow().keys() {
            out.entry(name.clone())
                .or_insert_with(|| ("consumer".to_string(), GroupState::Empty));
        }
        out.into_iter().map(|(n, (t, s))| (n, t, s)).collect()
    }

    pub fn describe(&self, group: &str) -> Option<(GroupState, String, String, Vec<Member>)> {
        if let Some(g) = self.groups.borrow().get(group) {
            return Some((
                g.state,
                g.protocol_type.clone(),
                g.protocol.clone(),
                g.members.values().cloned().collect(),
            ));
        }
        self.offsets.borrow().contains_key(group).then(|| {
            (
                GroupState::Empty,
                "consumer".to_string(),
                String::new(),
                Vec::new(),
            )
        })
    }

    /// OffsetDelete: which of `topics` keep their offsets because a member of the group
    /// subscribes to them (Kafka's GROUP_SUBSCRIBED_TO_TOPIC), or an error for the whole
    /// request: GROUP_ID_NOT_FOUND, or NON_EMPTY_GROUP for a group with members whose protocol
    /// is not "consumer" (its subscriptions cannot be read). A member whose subscription does
    /// not decode counts as subscribed to every topic asked about.
    pub fn subscribed_of(&self, group: &str, topics: &[String]) -> Result<BTreeSet<String>, i16> {
        let groups = self.groups.borrow();
        let Some(g) = groups.get(group) else {
            return if self.offsets.borrow().contains_key(group) {
                Ok(BTreeSet::new())
            } else {
                Err(GROUP_ID_NOT_FOUND)
            };
        };
        if g.members.is_empty() {
            return Ok(BTreeSet::new());
        }
        if g.protocol_type != "consumer" {
            return Err(NON_EMPTY_GROUP);
        }
        let mut subscribed = BTreeSet::new();
        for m in g.members.values() {
            let metadata = m
                .protocols
                .iter()
                .find(|(name, _)| *name == g.protocol)
                .or_else(|| m.protocols.first())
                .map(|(_, meta)| meta.clone());
            match metadata.and_then(subscription_topics) {
                Some(ts) => subscribed.extend(ts.into_iter().filter(|t| topics.contains(t))),
                None => subscribed.extend(topics.iter().cloned()),
            }
        }
        Ok(subscribed)
    }

    /// DeleteGroups: only an empty group; returns its committed offsets to tombstone.
    pub fn delete(&self, group: &str) -> Result<Vec<(String, i32)>, i16> {
        let mut groups = self.groups.borrow_mut();
        if let Some(g) = groups.get(group) {
            if !g.members.is_empty() {
                return Err(NON_EMPTY_GROUP);
            }
        } else if !self.offsets.borrow().contains_key(group) {
            return Err(GROUP_ID_NOT_FOUND);
        }
        groups.remove(group);
        let keys = self
            .offsets
            .borrow_mut()
            .remove(group)
            .map(|m| m.into_keys().collect())
            .unwrap_or_default();
        Ok(keys)
    }
}

/// The topics of a consumer protocol subscription (a version, then the subscription at that
/// version), or `None` if it does not decode.
fn subscription_topics(mut metadata: Bytes) -> Option<Vec<String>> {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::Decodable;
    if metadata.len() < 2 {
        return None;
    }
    let version = i16::from_be_bytes([metadata[0], metadata[1]]);
    let _ = metadata.split_to(2);
    // Newer versions only add fields at the end: read what this codec knows.
    let version = version.clamp(0, 3);
    let sub = ConsumerProtocolSubscription::decode(&mut metadata, version).ok()?;
    Some(sub.topics.iter().map(|t| t.as_str().to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    fn coordinator() -> Coordinator {
        Coordinator::new(&NetConfig {
            group_initial_rebalance_delay_ms: 50,
            ..NetConfig::default()
        })
    }

    /// Runs two joins together: both register, then the clock passes the initial delay.
    fn join_two(c: &Coordinator, a: JoinRequest, b: JoinRequest) -> (JoinOutcome, JoinOutcome) {
        let mut fa = Box::pin(c.join(a));
        let mut fb = Box::pin(c.join(b));
        assert!(block_on(poll_once(&mut fa)).is_none());
        assert!(block_on(poll_once(&mut fb)).is_none());
        c.tick(Instant::now() + Duration::from_secs(1));
        (block_on(fa), block_on(fb))
    }

    /// Runs a join that completes at the next tick.
    fn join_one(c: &Coordinator, r: JoinRequest) -> JoinOutcome {
        let mut f = Box::pin(c.join(r));
        if let Some(o) = block_on(poll_once(&mut f)) {
            return o;
        }
        c.tick(Instant::now() + Duration::from_secs(1));
        block_on(f)
    }

    #[test]
    fn offset_delete_keeps_the_topics_a_member_subscribes_to() {
        use kafka_protocol::messages::ConsumerProtocolSubscription;
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let c = coordinator();
        let topics = vec!["a".to_string(), "b".to_string()];
        assert_eq!(c.subscribed_of("g", &topics), Err(GROUP_ID_NOT_FOUND));
        // Committed offsets and no members: everything may go.
        c.apply_commit(
            "g",
            "a",
            0,
            Some(Committed {
                offset: 1,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 0,
            }),
        );
        assert_eq!(c.subscribed_of("g", &topics), Ok(BTreeSet::new()));
        // A member subscribed to "a" (a v1 subscription, as Java clients write it).
        let mut meta = bytes::BytesMut::new();
        meta.extend_from_slice(&1i16.to_be_bytes());
        ConsumerProtocolSubscription::default()
            .with_topics(vec![StrBytes::from_static_str("a")])
            .encode(&mut meta, 1)
            .unwrap();
        let mut r = join("");
        r.protocols = vec![("range".into(), meta.freeze())];
        let joined = join_one(&c, r);
        assert_eq!(joined.error, NONE);
        assert_eq!(
            c.subscribed_of("g", &topics),
            Ok(BTreeSet::from(["a".to_string()]))
        );
        // A subscription that does not decode keeps every topic asked about.
        let c2 = coordinator();
        assert_eq!(join_one(&c2, join("")).error, NONE);
        assert_eq!(
            c2.subscribed_of("g", &topics),
            Ok(topics.iter().cloned().collect())
        );
    }

    fn join(member: &str) -> JoinRequest {
        JoinRequest {
            group: "g".into(),
            member_id: member.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
        }
    }

    #[test]
    fn join_sync_heartbeat_commit_and_rebalance() {
        let c = coordinator();
        // Two members join together: one generation, one leader who sees both.
        let (a, b) = join_two(&c, join(""), join(""));
        assert_eq!((a.error, b.error), (NONE, NONE));
        assert_eq!((a.generation, b.generation), (1, 1));
        let (leader, follower) = if a.member_id == a.leader {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(leader.members.len(), 2);
        assert!(follower.members.is_empty());
        assert_eq!(leader.protocol, "range");

        // The follower's sync waits for the leader's assignments.
        let assignments = vec![
            (leader.member_id.clone(), Bytes::from_static(b"A")),
            (follower.member_id.clone(), Bytes::from_static(b"B")),
        ];
        let mut f = Box::pin(c.sync("g", &follower.member_id, 1, vec![]));
        assert!(
            block_on(poll_once(&mut f)).is_none(),
            "waits for the leader"
        );
        let ls = block_on(c.sync("g", &leader.member_id, 1, assignments));
        let fs = block_on(f);
        assert_eq!((fs.error, &fs.assignment[..]), (NONE, &b"B"[..]));
        assert_eq!(&ls.assignment[..], b"A");
        assert_eq!(c.heartbeat("g", &follower.member_id, 1), NONE);
        assert_eq!(c.heartbeat("g", &follower.member_id, 0), ILLEGAL_GENERATION);
        assert_eq!(c.heartbeat("g", "stranger", 1), UNKNOWN_MEMBER_ID);
        assert_eq!(c.check_commit("g", &follower.member_id, 1), NONE);

        // A follower rejoining unchanged keeps its assignment and its generation.
        let again = join_one(&c, join(&follower.member_id));
        assert_eq!((again.error, again.generation), (NONE, 1));
        assert_eq!(
            &block_on(c.sync("g", &follower.member_id, 1, vec![])).assignment[..],
            b"B"
        );

        // A leaving member starts a rebalance: the others learn it from their heartbeat, may
        // still commit, and rejoin into generation 2.
        assert_eq!(
            c.leave("g", &[(follower.member_id.clone(), None)]),
            vec![NONE]
        );
        assert_eq!(
            c.heartbeat("g", &leader.member_id, 1),
            REBALANCE_IN_PROGRESS
        );
        assert_eq!(c.check_commit("g", &leader.member_id, 1), NONE);
        let rejoined = join_one(&c, join(&leader.member_id));
        assert_eq!((rejoined.generation, rejoined.members.len()), (2, 1));
        // Between join and sync, commits wait for the new assignment.
        assert_eq!(
            c.check_commit("g", &leader.member_id, 2),
            REBALANCE_IN_PROGRESS
        );
        assert_eq!(
            c.leave("g", &[(leader.member_id.clone(), None)]),
            vec![NONE]
        );
        assert_eq!(c.describe("g").map(|d| d.0), Some(GroupState::Empty));
    }

    #[test]
    fn bad_joins_and_deletes() {
        let c = coordinator();
        let mut short = join("");
        short.session_timeout_ms = 10;
        assert_eq!(join_one(&c, short).error, INVALID_SESSION_TIMEOUT);
        assert_eq!(join_one(&c, join("ghost")).error, UNKNOWN_MEMBER_ID);
        let mut empty_group = join("");
        empty_group.group.clear();
        assert_eq!(join_one(&c, empty_group).error, INVALID_GROUP_ID);
        let a = join_one(&c, join(""));
        let mut other = join("");
        other.protocols = vec![("sticky".into(), Bytes::new())];
        assert_eq!(join_one(&c, other).error, INCONSISTENT_GROUP_PROTOCOL);
        assert_eq!(c.delete("g"), Err(NON_EMPTY_GROUP));
        assert_eq!(c.delete("nope"), Err(GROUP_ID_NOT_FOUND));
        c.apply_commit(
            "g",
            "t",
            0,
            Some(Committed {
                offset: 5,
                leader_epoch: -1,
                metadata: String::new(),
                commit_timestamp: 0,
            }),
        );
        c.leave("g", &[(a.member_id, None)]);
        assert_eq!(c.delete("g"), Ok(vec![("t".to_string(), 0)]));
        assert!(c.committed("g").is_empty());
    }
}
