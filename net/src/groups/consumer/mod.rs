//! The KIP-848 consumer group protocol ("consumer" groups), beside the classic one: the
//! coordinator assigns partitions itself and hands them out through ConsumerGroupHeartbeat.
//!
//! Sans-I/O: nothing here sleeps, reads a clock or touches a socket. The caller passes the
//! time (`Instant`), the topics (`TopicImage`) and the request, and gets back the answer;
//! `Coordinator` (`coordinator.rs`) holds the groups of a shard and is the only glue.
//!
//! - `assignment`: who gets which partition, by topic id (`Assignment`);
//! - `assignor`: the server-side assignors, `uniform` (balanced and sticky) and `range`;
//! - `member`: one member's epochs, subscription and current assignment;
//! - `reconcile`: moving a member towards its target assignment: revoke first, then assign
//!   only partitions no other member still holds (Kafka's `CurrentAssignmentBuilder`);
//! - `topics`: the topic image a group resolves its subscriptions against (names, regexes);
//! - `group`: a group's epochs, members, target assignment and who holds each partition;
//! - `heartbeat`: ConsumerGroupHeartbeat on a group: join (epoch 0), heartbeat, leave (-1),
//!   static leave (-2), fencing, and the timers (session and revocation timeouts);
//! - `coordinator`: the groups of one shard, the classic/consumer exclusion, commit checks.
//!
//! What it must never do: hand a partition to a member while another member still holds it
//! (`group::ConsumerGroup::check_exclusive` asserts it in tests).

mod assignment;
mod assignor;
mod coordinator;
mod group;
mod heartbeat;
mod member;
mod reconcile;
mod topics;

pub use assignment::{Assignment, TopicId};
pub use assignor::Assignor;
pub(crate) use coordinator::ConsumerGroups;
pub use coordinator::{ConsumerCommitCheck, ConsumerDescription, ConsumerSettings};
pub use group::{ConsumerGroup, ConsumerGroupState};
pub use heartbeat::{HeartbeatAnswer, HeartbeatRequest};
pub use member::{ConsumerMember, MemberState};
pub use topics::TopicImage;

/// Kafka's error codes of this protocol.
pub const INVALID_REQUEST: i16 = 42;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const FENCED_INSTANCE_ID: i16 = 82;
pub const FENCED_MEMBER_EPOCH: i16 = 110;
pub const UNRELEASED_INSTANCE_ID: i16 = 111;
pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
pub const STALE_MEMBER_EPOCH: i16 = 113;
pub const INVALID_REGULAR_EXPRESSION: i16 = 128;
pub const UNSUPPORTED_VERSION: i16 = 35;

/// The epoch a member sends to join (or rejoin) a group.
pub const JOIN_EPOCH: i32 = 0;
/// The epoch a member sends to leave a group.
pub const LEAVE_EPOCH: i32 = -1;
/// The epoch a static member sends when it leaves for a while (it keeps its partitions until
/// it comes back or its session expires).
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// An error answered to a request, with Kafka's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupError {
    pub code: i16,
    pub message: String,
}

impl GroupError {
    pub fn new(code: i16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests;
