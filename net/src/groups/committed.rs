//! Committed offsets of the groups a shard coordinates, as replayed from and appended to
//! `__consumer_offsets` (`commit_log`), and who may commit: a current member (of a classic
//! group at its generation, of a consumer group at its member epoch), or a client outside any
//! group.

use std::collections::BTreeMap;

use super::consumer::ConsumerCommitCheck;
use super::{Coordinator, GroupState, GROUP_ID_NOT_FOUND, NONE, REBALANCE_IN_PROGRESS};

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

impl Coordinator {
    /// Checks that a commit comes from a current member (or from outside any group).
    /// `version` is the OffsetCommit version.
    pub fn check_commit(&self, group: &str, member_id: &str, generation: i32, version: i16) -> i16 {
        if let ConsumerCommitCheck::Answer(r) =
            self.check_consumer_commit(group, member_id, generation, version)
        {
            if r != NONE {
                tracing::debug!(
                    group,
                    member = member_id,
                    epoch = generation,
                    error = r,
                    "commit refused"
                );
            }
            return r;
        }
        // A commit from outside any group (no generation, no member), or without a
        // generation to a group that does not exist, is stored as it is.
        let exists = self.groups.borrow().contains_key(group);
        let outside = generation < 0 && (member_id.is_empty() || !exists);
        let r = if outside {
            NONE
        } else if !exists && version >= 9 {
            // From v9, as Kafka: a generation or epoch for a group that does not exist.
            GROUP_ID_NOT_FOUND
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
}
