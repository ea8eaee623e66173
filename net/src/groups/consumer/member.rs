//! One member of a consumer group: who it is, what it subscribes to, its epochs and the
//! partitions it holds. A member's epoch moves to the group's target assignment epoch once it
//! has revoked what it must give up (`reconcile`).

use std::collections::BTreeSet;
use std::time::Instant;

use super::Assignment;

/// Where a member is on its way to the target assignment (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// At the target epoch with every partition of its target it can have.
    Stable,
    /// It must first give up `pending_revocation`; its epoch stays until it has.
    UnrevokedPartitions,
    /// At the target epoch, but some of its target partitions are still held by others.
    UnreleasedPartitions,
}

impl MemberState {
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Stable => "stable",
            MemberState::UnrevokedPartitions => "unrevoked_partitions",
            MemberState::UnreleasedPartitions => "unreleased_partitions",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerMember {
    pub id: String,
    /// A static member's instance id (`group.instance.id`).
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub epoch: i32,
    /// The epoch before the last change: a heartbeat with it and a subset of the current
    /// partitions is a lost answer, not a stale member.
    pub previous_epoch: i32,
    pub state: MemberState,
    pub rebalance_timeout_ms: i32,
    /// The assignor the member asks for, if any.
    pub server_assignor: Option<String>,
    pub subscribed_names: BTreeSet<String>,
    pub subscribed_regex: Option<String>,
    /// The partitions it may consume now.
    pub assigned: Assignment,
    /// The partitions it must give up before it gets more.
    pub pending_revocation: Assignment,
    /// When the member is fenced unless it heartbeats again.
    pub session_deadline: Instant,
    /// While it must revoke: when it is fenced unless it has, and at which epoch.
    pub revocation_deadline: Option<(Instant, i32)>,
}

impl ConsumerMember {
    pub fn new(id: String, now: Instant) -> Self {
        Self {
            id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            epoch: 0,
            previous_epoch: 0,
            state: MemberState::Stable,
            rebalance_timeout_ms: -1,
            server_assignor: None,
            subscribed_names: BTreeSet::new(),
            subscribed_regex: None,
            assigned: Assignment::new(),
            pending_revocation: Assignment::new(),
            session_deadline: now,
            revocation_deadline: None,
        }
    }

    /// Whether it has reached the target assignment of `epoch`.
    pub fn is_reconciled_to(&self, epoch: i32) -> bool {
        self.state == MemberState::Stable && self.epoch == epoch
    }

    /// Every partition it still holds: those it consumes and those it has yet to revoke.
    pub fn held(&self) -> Assignment {
        self.assigned.union(&self.pending_revocation)
    }

    /// Moves to `epoch`, remembering the one before.
    pub(super) fn set_epoch(&mut self, epoch: i32) {
        self.previous_epoch = self.epoch;
        self.epoch = epoch;
    }
}
