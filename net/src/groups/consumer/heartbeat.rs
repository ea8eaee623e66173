//! ConsumerGroupHeartbeat on one group: a member joins with epoch 0, heartbeats with its
//! epoch (reporting what it owns when that changed), leaves with -1, and a static member
//! leaves for a while with -2. Each heartbeat may move the group epoch (a new member, a new
//! subscription, topics that changed), which recomputes the target assignment, then moves
//! the member one step towards its target (`reconcile`). Timers: a member silent for the
//! session timeout, or one that has not revoked within its rebalance timeout, is fenced.

use std::time::{Duration, Instant};

use super::reconcile::reconcile;
use super::topics::compile_regex;
use super::{
    Assignment, Assignor, ConsumerGroup, ConsumerMember, ConsumerSettings, GroupError, MemberState,
    TopicImage, FENCED_INSTANCE_ID, FENCED_MEMBER_EPOCH, INVALID_REGULAR_EXPRESSION,
    INVALID_REQUEST, JOIN_EPOCH, LEAVE_EPOCH, STATIC_LEAVE_EPOCH, UNKNOWN_MEMBER_ID,
    UNRELEASED_INSTANCE_ID, UNSUPPORTED_ASSIGNOR,
};

/// A ConsumerGroupHeartbeat, decoded. `None` fields did not change since the last one.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatRequest {
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// What the member owns now, by topic id.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// What a heartbeat answers when it succeeds.
#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's partitions, when they changed or it sent a full request.
    pub assignment: Option<Assignment>,
}

fn invalid(message: &str) -> GroupError {
    GroupError::new(INVALID_REQUEST, message)
}

/// Checks a heartbeat's fields before it touches any group (Kafka's
/// `throwIfConsumerGroupHeartbeatRequestIsInvalid`). From v1 the client makes up its member
/// id, so it may never be empty.
pub fn validate(group_id: &str, req: &HeartbeatRequest, version: i16) -> Result<(), GroupError> {
    if group_id.is_empty() {
        return Err(invalid("GroupId can't be empty."));
    }
    if req.instance_id.as_deref() == Some("") {
        return Err(invalid("InstanceId can't be empty."));
    }
    if req.rack_id.as_deref() == Some("") {
        return Err(invalid("RackId can't be empty."));
    }
    if version >= 1 && req.member_id.is_empty() {
        return Err(invalid("MemberId can't be empty."));
    }
    match req.member_epoch {
        e if e > 0 || e == LEAVE_EPOCH => {
            if req.member_id.is_empty() {
                return Err(invalid("MemberId can't be empty."));
            }
        }
        JOIN_EPOCH => {
            if req.rebalance_timeout_ms == -1 {
                return Err(invalid(
                    "RebalanceTimeoutMs must be provided in first request.",
                ));
            }
            if req.owned.as_ref().is_none_or(|o| !o.is_empty()) {
                return Err(invalid("TopicPartitions must be empty when (re-)joining."));
            }
            let names = req
                .subscribed_topic_names
                .as_ref()
                .is_some_and(|n| !n.is_empty());
            let regex = req
                .subscribed_topic_regex
                .as_ref()
                .is_some_and(|r| !r.is_empty());
            if !names && !regex {
                return Err(invalid(
                    "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
                ));
            }
        }
        STATIC_LEAVE_EPOCH => {
            if req.member_id.is_empty() {
                return Err(invalid("MemberId can't be empty."));
            }
            if req.instance_id.is_none() {
                return Err(invalid("InstanceId can't be null."));
            }
        }
        _ => return Err(invalid("MemberEpoch is invalid.")),
    }
    if let Some(name) = &req.server_assignor {
        if Assignor::by_name(name).is_none() {
            let known: Vec<&str> = Assignor::ALL.iter().map(|a| a.name()).collect();
            return Err(GroupError::new(
                UNSUPPORTED_ASSIGNOR,
                format!(
                    "ServerAssignor {name} is not supported. Supported assignors: {}.",
                    known.join(", ")
                ),
            ));
        }
    }
    if let Some(re) = req
        .subscribed_topic_regex
        .as_deref()
        .filter(|r| !r.is_empty())
    {
        if let Err(e) = compile_regex(re) {
            return Err(GroupError::new(
                INVALID_REGULAR_EXPRESSION,
                format!("SubscribedTopicRegex `{re}` is not a valid regular expression: {e}."),
            ));
        }
    }
    Ok(())
}

/// A heartbeat's epoch against the member's (Kafka's
/// `throwIfConsumerGroupMemberEpochIsInvalid`): ahead is fenced; behind is fenced unless it
/// is the previous epoch with a subset of the current partitions (the answer that moved the
/// member on was lost).
fn check_epoch(
    m: &ConsumerMember,
    received: i32,
    owned: Option<&Assignment>,
) -> Result<(), GroupError> {
    if received > m.epoch {
        return Err(GroupError::new(
            FENCED_MEMBER_EPOCH,
            format!(
                "The consumer group member has a greater member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                m.epoch
            ),
        ));
    }
    if received < m.epoch
        && (received != m.previous_epoch || !owned.is_some_and(|o| o.is_subset_of(&m.assigned)))
    {
        return Err(GroupError::new(
            FENCED_MEMBER_EPOCH,
            format!(
                "The consumer group member has a smaller member epoch ({received}) than the one known by the group coordinator ({}). The member must abandon all its partitions and rejoin.",
                m.epoch
            ),
        ));
    }
    Ok(())
}

impl ConsumerGroup {
    /// A heartbeat with epoch 0 or above (leaving is `leave`). `image_version` says which
    /// topic image `image` is: a new one re-resolves the subscriptions.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        req: &HeartbeatRequest,
        image: &TopicImage,
        image_version: u64,
        settings: &ConsumerSettings,
        now: Instant,
    ) -> Result<HeartbeatAnswer, GroupError> {
        let joining = req.member_epoch == JOIN_EPOCH;
        let unknown = || {
            GroupError::new(
                UNKNOWN_MEMBER_ID,
                format!(
                    "Member {} is not a member of group {group_id}.",
                    req.member_id
                ),
            )
        };
        let mut replaced: Option<ConsumerMember> = None;
        let member = match &req.instance_id {
            None => match self.members.get(&req.member_id) {
                Some(m) => {
                    check_epoch(m, req.member_epoch, req.owned.as_ref())?;
                    m.clone()
                }
                None if joining => ConsumerMember::new(req.member_id.clone(), now),
                None => return Err(unknown()),
            },
            Some(instance) => match self.static_member(instance).cloned() {
                None if joining => match self.members.get(&req.member_id) {
                    Some(m) => m.clone(),
                    None => ConsumerMember::new(req.member_id.clone(), now),
                },
                None => {
                    return Err(GroupError::new(
                        UNKNOWN_MEMBER_ID,
                        format!("Instance id {instance} is unknown."),
                    ))
                }
                Some(old) if joining => {
                    if old.epoch != STATIC_LEAVE_EPOCH {
                        return Err(GroupError::new(
                            UNRELEASED_INSTANCE_ID,
                            format!(
                                "Static member {} with instance id {instance} cannot join the group because the instance id is owned by {} member.",
                                req.member_id, old.id
                            ),
                        ));
                    }
                    // The instance comes back under a new member id: it keeps its
                    // partitions and its target, from epoch 0.
                    let mut m = old.clone();
                    m.id = req.member_id.clone();
                    m.epoch = 0;
                    m.previous_epoch = 0;
                    replaced = Some(old);
                    m
                }
                Some(m) => {
                    if m.id != req.member_id {
                        return Err(GroupError::new(
                            FENCED_INSTANCE_ID,
                            format!(
                                "Static member {} with instance id {instance} was fenced by member {}.",
                                req.member_id, m.id
                            ),
                        ));
                    }
                    check_epoch(&m, req.member_epoch, req.owned.as_ref())?;
                    m
                }
            },
        };
        let is_new = !self.members.contains_key(&member.id) && replaced.is_none();
        let mut updated = member.clone();
        if let Some(i) = &req.instance_id {
            updated.instance_id = Some(i.clone());
        }
        if let Some(r) = &req.rack_id {
            updated.rack_id = Some(r.clone());
        }
        if req.rebalance_timeout_ms != -1 {
            updated.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        if let Some(a) = &req.server_assignor {
            updated.server_assignor = Some(a.clone());
        }
        if let Some(names) = &req.subscribed_topic_names {
            updated.subscribed_names = names.iter().cloned().collect();
        }
        if let Some(re) = &req.subscribed_topic_regex {
            updated.subscribed_regex = (!re.is_empty()).then(|| re.clone());
        }
        updated.client_id = req.client_id.clone();
        updated.client_host = req.client_host.clone();
        updated.session_deadline = now + settings.session_timeout;
        let subscription_changed = is_new
            || updated.subscribed_names != member.subscribed_names
            || updated.subscribed_regex != member.subscribed_regex;
        if let Some(old) = &replaced {
            let target = self.target_of(&old.id);
            self.remove_member(&old.id);
            self.target.insert(updated.id.clone(), target);
            tracing::info!(group = group_id, member = %updated.id, replaced = %old.id, "static member rejoined");
        } else if is_new {
            tracing::info!(group = group_id, member = %updated.id, "member joined (consumer protocol)");
        }
        self.put_member(updated.clone());
        if subscription_changed || image_version != self.image_seen {
            let bumped = self.refresh(image, image_version, subscription_changed);
            if bumped {
                tracing::info!(
                    group = group_id,
                    group_epoch = self.group_epoch,
                    members = self.members.len(),
                    "group epoch bumped: new target assignment"
                );
            }
        }
        if !updated.is_reconciled_to(self.assignment_epoch) {
            let target = self.target_of(&updated.id);
            let holder = |t, p| self.holder_epoch(t, p);
            let mut next = reconcile(
                &updated,
                self.assignment_epoch,
                &target,
                &holder,
                req.owned.as_ref(),
            );
            if next != updated {
                next.revocation_deadline =
                    (next.state == MemberState::UnrevokedPartitions).then(|| {
                        let timeout =
                            Duration::from_millis(next.rebalance_timeout_ms.max(0) as u64);
                        (now + timeout, next.epoch)
                    });
                tracing::debug!(
                    group = group_id,
                    member = %next.id,
                    epoch = next.epoch,
                    state = next.state.name(),
                    assigned = %next.assigned,
                    revoking = %next.pending_revocation,
                    "member reconciled"
                );
                self.put_member(next.clone());
                updated = next;
            }
        }
        let full = joining
            || (req.rebalance_timeout_ms != -1
                && (req.subscribed_topic_names.is_some() || req.subscribed_topic_regex.is_some())
                && req.owned.is_some());
        let changed = updated.assigned != member.assigned;
        Ok(HeartbeatAnswer {
            member_id: updated.id.clone(),
            member_epoch: updated.epoch,
            heartbeat_interval_ms: settings.heartbeat_interval_ms,
            assignment: (full || changed).then(|| updated.assigned.clone()),
        })
    }

    /// A heartbeat with epoch -1 (leave) or -2 (a static member leaving for a while: it keeps
    /// its partitions until it rejoins or its session expires).
    pub fn leave(
        &mut self,
        group_id: &str,
        req: &HeartbeatRequest,
        image: &TopicImage,
        image_version: u64,
    ) -> Result<HeartbeatAnswer, GroupError> {
        let answer = HeartbeatAnswer {
            member_id: req.member_id.clone(),
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: None,
        };
        let id = match &req.instance_id {
            None => {
                if !self.members.contains_key(&req.member_id) {
                    return Err(GroupError::new(
                        UNKNOWN_MEMBER_ID,
                        format!(
                            "Member {} is not a member of group {group_id}.",
                            req.member_id
                        ),
                    ));
                }
                req.member_id.clone()
            }
            Some(instance) => {
                let Some(m) = self.static_member(instance) else {
                    return Err(GroupError::new(
                        UNKNOWN_MEMBER_ID,
                        format!("Instance id {instance} is unknown."),
                    ));
                };
                if m.id != req.member_id {
                    return Err(GroupError::new(
                        FENCED_INSTANCE_ID,
                        format!(
                            "Static member {} with instance id {instance} was fenced by member {}.",
                            req.member_id, m.id
                        ),
                    ));
                }
                if req.member_epoch == STATIC_LEAVE_EPOCH {
                    let mut away = m.clone();
                    away.epoch = STATIC_LEAVE_EPOCH;
                    away.pending_revocation = Assignment::new();
                    away.revocation_deadline = None;
                    self.put_member(away);
                    tracing::info!(group = group_id, member = %req.member_id, instance = %instance, "static member left for now");
                    return Ok(answer);
                }
                m.id.clone()
            }
        };
        tracing::info!(group = group_id, member = %id, "member left (consumer protocol)");
        self.fence(&id, image, image_version);
        Ok(answer)
    }

    /// Removes a member; the others are reassigned.
    pub fn fence(&mut self, member_id: &str, image: &TopicImage, image_version: u64) {
        if self.remove_member(member_id).is_some() {
            self.refresh(image, image_version, true);
        }
    }

    /// Fences the members whose session expired or that did not revoke in time; returns
    /// them with why.
    pub fn expire(
        &mut self,
        now: Instant,
        image: &TopicImage,
        image_version: u64,
    ) -> Vec<(String, &'static str)> {
        let expired: Vec<(String, &'static str)> = self
            .members
            .values()
            .filter_map(|m| {
                if now >= m.session_deadline {
                    Some((m.id.clone(), "session expired"))
                } else if m.state == MemberState::UnrevokedPartitions
                    && m.revocation_deadline
                        .is_some_and(|(t, e)| now >= t && e == m.epoch)
                {
                    Some((m.id.clone(), "did not revoke within its rebalance timeout"))
                } else {
                    None
                }
            })
            .collect();
        for (id, _) in &expired {
            self.fence(id, image, image_version);
        }
        expired
    }
}
