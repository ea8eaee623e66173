//! A consumer group: its epochs, members, target assignment and who holds each partition.
//!
//! - The group epoch moves whenever what should be assigned changes: a member joins, leaves or
//!   changes its subscription, or a subscribed topic appears, goes or gains partitions.
//! - The target assignment is recomputed by the assignor at once (so the assignment epoch
//!   always catches up with the group epoch before the heartbeat that moved it is answered).
//! - `holders` knows, for every partition some member holds (assigned or still to revoke),
//!   that member and its epoch: reconciliation gives a partition only when it has no holder.

use std::collections::{BTreeMap, BTreeSet};

use super::assignor::AssignmentSpec;
use super::topics::compile_regex;
use super::{Assignment, Assignor, ConsumerMember, TopicId, TopicImage};

/// Kafka's `ConsumerGroupState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerGroupState {
    Empty,
    Assigning,
    Reconciling,
    Stable,
}

impl ConsumerGroupState {
    pub fn name(self) -> &'static str {
        match self {
            ConsumerGroupState::Empty => "Empty",
            ConsumerGroupState::Assigning => "Assigning",
            ConsumerGroupState::Reconciling => "Reconciling",
            ConsumerGroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Default)]
pub struct ConsumerGroup {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// Instance id -> member id, for static members.
    static_members: BTreeMap<String, String>,
    /// The target assignment of `assignment_epoch`, by member id.
    pub target: BTreeMap<String, Assignment>,
    /// Every held partition: its holder and the holder's epoch.
    holders: BTreeMap<(TopicId, i32), (String, i32)>,
    /// The subscribed topics that exist, with id and partition count, as of the last
    /// computation: a change bumps the group epoch.
    subscription: BTreeMap<String, (TopicId, u32)>,
    /// The members' subscription regexes, compiled.
    regexes: BTreeMap<String, regex::Regex>,
    /// The assignor of the current target.
    pub assignor: Option<Assignor>,
    /// The topic image version the subscription was last computed against.
    pub(super) image_seen: u64,
}

impl ConsumerGroup {
    pub fn state(&self) -> ConsumerGroupState {
        if self.members.is_empty() {
            ConsumerGroupState::Empty
        } else if self.group_epoch > self.assignment_epoch {
            ConsumerGroupState::Assigning
        } else if self
            .members
            .values()
            .any(|m| !m.is_reconciled_to(self.assignment_epoch))
        {
            ConsumerGroupState::Reconciling
        } else {
            ConsumerGroupState::Stable
        }
    }

    /// The epoch of the member holding a partition, if one does.
    pub fn holder_epoch(&self, topic: TopicId, partition: i32) -> Option<i32> {
        self.holders.get(&(topic, partition)).map(|(_, e)| *e)
    }

    pub fn static_member(&self, instance_id: &str) -> Option<&ConsumerMember> {
        self.static_members
            .get(instance_id)
            .and_then(|id| self.members.get(id))
    }

    pub fn target_of(&self, member_id: &str) -> Assignment {
        self.target.get(member_id).cloned().unwrap_or_default()
    }

    /// Stores a member (new or changed), keeping `holders` and the static ids in step.
    pub fn put_member(&mut self, member: ConsumerMember) {
        if let Some(old) = self.members.get(&member.id) {
            for (t, p) in old.held().iter() {
                if self.holders.get(&(t, p)).is_some_and(|(h, _)| *h == old.id) {
                    self.holders.remove(&(t, p));
                }
            }
        }
        for (t, p) in member.held().iter() {
            let previous = self
                .holders
                .insert((t, p), (member.id.clone(), member.epoch));
            debug_assert!(
                previous.as_ref().is_none_or(|(h, _)| *h == member.id),
                "partition {t}:{p} given to {} while {previous:?} holds it",
                member.id
            );
        }
        if let Some(instance) = &member.instance_id {
            self.static_members
                .insert(instance.clone(), member.id.clone());
        }
        if let Some(re) = &member.subscribed_regex {
            if !self.regexes.contains_key(re) {
                if let Ok(compiled) = compile_regex(re) {
                    self.regexes.insert(re.clone(), compiled);
                }
            }
        }
        self.members.insert(member.id.clone(), member);
    }

    /// Removes a member and what it held; returns it.
    pub fn remove_member(&mut self, member_id: &str) -> Option<ConsumerMember> {
        let old = self.members.remove(member_id)?;
        for (t, p) in old.held().iter() {
            if self.holders.get(&(t, p)).is_some_and(|(h, _)| *h == old.id) {
                self.holders.remove(&(t, p));
            }
        }
        if let Some(instance) = &old.instance_id {
            if self.static_members.get(instance) == Some(&old.id) {
                self.static_members.remove(instance);
            }
        }
        self.target.remove(member_id);
        let in_use: BTreeSet<&String> = self
            .members
            .values()
            .filter_map(|m| m.subscribed_regex.as_ref())
            .collect();
        self.regexes.retain(|re, _| in_use.contains(re));
        Some(old)
    }

    /// Every topic name a member subscribes to: its names and what its regex matches.
    fn member_topic_names(&self, m: &ConsumerMember, image: &TopicImage) -> BTreeSet<String> {
        let mut names = m.subscribed_names.clone();
        if let Some(re) = m
            .subscribed_regex
            .as_ref()
            .and_then(|r| self.regexes.get(r))
        {
            names.extend(image.matching(re).map(str::to_string));
        }
        names
    }

    /// Every topic name any member subscribes to.
    pub fn subscribed_topic_names(&self, image: &TopicImage) -> BTreeSet<String> {
        self.members
            .values()
            .flat_map(|m| self.member_topic_names(m, image))
            .collect()
    }

    /// Recomputes the subscribed topics; if they changed, or `bump`, moves the group epoch
    /// and computes the new target assignment. Returns whether the epoch moved.
    pub fn refresh(&mut self, image: &TopicImage, image_version: u64, bump: bool) -> bool {
        self.image_seen = image_version;
        let subscription: BTreeMap<String, (TopicId, u32)> = self
            .subscribed_topic_names(image)
            .into_iter()
            .filter_map(|n| image.get(&n).map(|v| (n, v)))
            .collect();
        let changed = subscription != self.subscription;
        self.subscription = subscription;
        if !(bump || changed) {
            return false;
        }
        self.group_epoch += 1;
        self.compute_target(image);
        true
    }

    /// The assignor most members ask for (ties: the first in `Assignor::ALL`), else the
    /// default.
    fn preferred_assignor(&self) -> Assignor {
        let mut votes: BTreeMap<Assignor, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref().and_then(Assignor::by_name) {
                *votes.entry(a).or_default() += 1;
            }
        }
        let most = votes.values().copied().max().unwrap_or(0);
        Assignor::ALL
            .into_iter()
            .find(|a| most > 0 && votes.get(a) == Some(&most))
            .unwrap_or(Assignor::ALL[0])
    }

    /// The assignor the next target would be computed with.
    pub fn assignor_name(&self) -> &'static str {
        self.assignor
            .unwrap_or_else(|| self.preferred_assignor())
            .name()
    }

    fn compute_target(&mut self, image: &TopicImage) {
        let members: BTreeMap<String, BTreeSet<TopicId>> = self
            .members
            .values()
            .map(|m| {
                let ids = self
                    .member_topic_names(m, image)
                    .iter()
                    .filter_map(|n| image.get(n).map(|(id, _)| id))
                    .collect();
                (m.id.clone(), ids)
            })
            .collect();
        let topics: BTreeMap<TopicId, u32> = self.subscription.values().copied().collect();
        let assignor = self.preferred_assignor();
        let target = assignor.assign(&AssignmentSpec {
            members: &members,
            topics: &topics,
            previous: &self.target,
        });
        self.target = target;
        self.assignor = Some(assignor);
        self.assignment_epoch = self.group_epoch;
    }

    /// The invariant of the protocol: no partition is held by two members at once, and
    /// `holders` says exactly what the members hold.
    pub fn check_exclusive(&self) -> Result<(), String> {
        let mut seen: BTreeMap<(TopicId, i32), &str> = BTreeMap::new();
        for m in self.members.values() {
            for tp in m.held().iter() {
                if let Some(other) = seen.insert(tp, &m.id) {
                    return Err(format!(
                        "partition {}:{} held by both {other} and {}",
                        tp.0, tp.1, m.id
                    ));
                }
                match self.holders.get(&tp) {
                    Some((h, e)) if *h == m.id && *e == m.epoch => {}
                    other => {
                        return Err(format!(
                            "holders says {other:?} for {}:{}, held by {} at epoch {}",
                            tp.0, tp.1, m.id, m.epoch
                        ))
                    }
                }
            }
        }
        if seen.len() != self.holders.len() {
            return Err(format!(
                "holders has {} partitions, the members hold {}",
                self.holders.len(),
                seen.len()
            ));
        }
        Ok(())
    }
}
