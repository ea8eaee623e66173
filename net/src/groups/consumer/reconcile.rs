//! Reconciliation: one step of a member towards its target assignment, as Kafka's
//! `CurrentAssignmentBuilder` does it.
//!
//! - Partitions it keeps: what it holds and is still in its target.
//! - Partitions it must revoke: what it holds and is not. While it reports owning any of
//!   them, it stays at its epoch (`UnrevokedPartitions`) and gets nothing new.
//! - Partitions it gets: the rest of its target, but only those no other member holds (an
//!   owner epoch is known for them); the others wait (`UnreleasedPartitions`) until released.
//!
//! So a partition goes from one member to another only after the first reported it no longer
//! owns it: revoke first, then assign.

use super::{Assignment, ConsumerMember, MemberState, TopicId};

/// The member after one step towards `target` (the target assignment of `target_epoch`).
/// `holder_epoch(t, p)` is the epoch of the member holding a partition, if any; `owned` is
/// what the member reported it owns in this heartbeat (`None`: not sent, so unchanged).
pub fn reconcile(
    member: &ConsumerMember,
    target_epoch: i32,
    target: &Assignment,
    holder_epoch: &dyn Fn(TopicId, i32) -> Option<i32>,
    owned: Option<&Assignment>,
) -> ConsumerMember {
    match member.state {
        MemberState::Stable if member.epoch == target_epoch => member.clone(),
        MemberState::Stable | MemberState::UnreleasedPartitions => next_assignment(
            member,
            member.epoch,
            target_epoch,
            target,
            holder_epoch,
            owned,
        ),
        MemberState::UnrevokedPartitions => {
            if owns_any(owned, &member.pending_revocation) {
                return member.clone();
            }
            // Revoked: on to the next epoch, and towards the latest target.
            next_assignment(
                member,
                member.epoch + 1,
                target_epoch,
                target,
                holder_epoch,
                owned,
            )
        }
    }
}

/// Whether the member still reports owning any of `partitions` (not reporting counts as
/// still owning them).
fn owns_any(owned: Option<&Assignment>, partitions: &Assignment) -> bool {
    owned.is_none_or(|o| o.overlaps(partitions))
}

fn next_assignment(
    member: &ConsumerMember,
    revoking_epoch: i32,
    target_epoch: i32,
    target: &Assignment,
    holder_epoch: &dyn Fn(TopicId, i32) -> Option<i32>,
    owned: Option<&Assignment>,
) -> ConsumerMember {
    let kept = member.assigned.intersection(target);
    let revoke = member.assigned.difference(&kept);
    let wanted = target.difference(&kept);
    let mut assign = Assignment::new();
    let mut unreleased = false;
    for (t, p) in wanted.iter() {
        if holder_epoch(t, p).is_some() {
            unreleased = true;
        } else {
            assign.insert(t, p);
        }
    }
    let mut next = member.clone();
    if !revoke.is_empty() && owns_any(owned, &revoke) {
        // Give up first; the epoch stays so that commits of what it gives up still count.
        next.state = MemberState::UnrevokedPartitions;
        next.set_epoch(revoking_epoch);
        next.assigned = kept;
        next.pending_revocation = revoke;
        return next;
    }
    next.set_epoch(target_epoch);
    next.assigned = kept.union(&assign);
    next.pending_revocation = Assignment::new();
    next.state = if unreleased {
        MemberState::UnreleasedPartitions
    } else {
        MemberState::Stable
    };
    next
}
