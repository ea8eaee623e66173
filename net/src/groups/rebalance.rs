//! The group state machine, after Kafka's classic coordinator: joins and syncs are barriers
//! (a oneshot waiter per member), a rebalance is prepared, completed when everyone rejoined or
//! its timeout passed, and made stable by the leader's assignments; heartbeats and leaving.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

use super::{
    Coordinator, Group, GroupState, JoinOutcome, JoinRequest, Member, SyncOutcome,
    ILLEGAL_GENERATION, INCONSISTENT_GROUP_PROTOCOL, INVALID_GROUP_ID, INVALID_SESSION_TIMEOUT,
    NONE, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID,
};

impl Coordinator {
    /// JoinGroup: resolves when the group's join phase ends.
    pub async fn join(&self, req: JoinRequest) -> JoinOutcome {
        if req.group.is_empty() {
            return JoinOutcome::error(INVALID_GROUP_ID, &req.member_id);
        }
        if req.session_timeout_ms < self.min_session || req.session_timeout_ms > self.max_session {
            return JoinOutcome::error(INVALID_SESSION_TIMEOUT, &req.member_id);
        }
        // A consumer protocol group with members takes no classic member (Kafka would take it
        // in as a classic member of the consumer group; Spate does not mix them).
        if !self.classic_join_allowed(&req.group) {
            return JoinOutcome::error(INCONSISTENT_GROUP_PROTOCOL, &req.member_id);
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

    pub(super) fn prepare_rebalance(&self, g: &mut Group, now: Instant) {
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

    pub(super) fn maybe_complete_join(&self, g: &mut Group, now: Instant) {
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

    pub(super) fn complete_join(&self, g: &mut Group) {
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

    pub(super) fn join_outcome(&self, g: &Group, member_id: &str) -> JoinOutcome {
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
    pub(super) fn current_member(
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

    pub(super) fn after_departure(&self, g: &mut Group) {
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
}
