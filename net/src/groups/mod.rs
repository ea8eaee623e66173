//! Consumer group coordination, the classic protocol and the KIP-848 consumer protocol side
//! by side. A group lives on the shard that owns its `__consumer_offsets` partition; every
//! request for it runs there, so nothing here is shared or locked. `Coordinator` is one
//! shard's groups and their committed offsets:
//! - `state`: what a group and a member are, and what join and sync answer;
//! - `rebalance`: the state machine (join and sync barriers, heartbeats, leaving);
//! - `timers`: the ticker that ends join phases and expires silent members;
//! - `offsets`: committed offsets and who may commit;
//! - `admin`: listing, describing and deleting groups, and OffsetDelete's subscriptions;
//! - `consumer`: the consumer protocol's groups (ConsumerGroupHeartbeat), sans-I/O.

mod admin;
mod committed;
pub mod consumer;
mod rebalance;
mod state;
#[cfg(test)]
mod tests;
mod timers;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use crate::config::NetConfig;

pub use admin::ClassicDescription;
pub use committed::{Committed, GroupOffsets};
pub use state::{Group, GroupState, JoinOutcome, JoinRequest, Member, SyncOutcome};

pub const NONE: i16 = 0;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const INVALID_SESSION_TIMEOUT: i16 = 26;
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const NON_EMPTY_GROUP: i16 = 68;
pub const GROUP_ID_NOT_FOUND: i16 = 69;
pub const INVALID_GROUP_ID: i16 = 24;

/// One shard's consumer groups and their committed offsets.
pub struct Coordinator {
    groups: RefCell<HashMap<String, Group>>,
    offsets: RefCell<HashMap<String, GroupOffsets>>,
    initial_delay: Duration,
    min_session: i32,
    max_session: i32,
    next_member: Cell<u64>,
    ticking: Cell<bool>,
    /// The consumer protocol's groups; a name is in `groups` or here, never both.
    consumer: consumer::ConsumerGroups,
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
            consumer: consumer::ConsumerGroups::new(config),
        }
    }

    /// Forgets every group `gone` names, with its members and committed offsets: this
    /// broker no longer leads the offsets partition that holds them (a cluster's coordinator
    /// moved). Their members learn it at their next request (NOT_COORDINATOR).
    pub(crate) fn forget_groups(&self, gone: impl Fn(&str) -> bool) {
        self.groups.borrow_mut().retain(|name, _| !gone(name));
        self.offsets.borrow_mut().retain(|name, _| !gone(name));
        self.consumer
            .groups
            .borrow_mut()
            .retain(|name, _| !gone(name));
    }

    pub(super) fn new_member_id(&self, client_id: &str) -> String {
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
}
