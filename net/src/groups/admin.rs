//! What admin requests see of the groups, of both protocols: ListGroups, DescribeGroups (of
//! classic groups), the subscriptions OffsetDelete must respect, and DeleteGroups (only an
//! empty group).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::{Coordinator, GroupState, Member, GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP};

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub name: String,
    pub protocol_type: String,
    pub state: &'static str,
    /// "classic" or "consumer".
    pub group_type: &'static str,
}

/// A group as DescribeGroups (the classic API) sees it.
#[derive(Debug, Clone)]
pub enum ClassicDescription {
    Classic(GroupState, String, String, Vec<Member>),
    /// A consumer protocol group: DescribeGroups does not describe it.
    ConsumerGroup,
    NotFound,
}

impl Coordinator {
    /// Every group this shard coordinates: with members or with committed offsets.
    pub fn list(&self) -> Vec<ListedGroup> {
        let groups = self.groups.borrow();
        let mut out: BTreeMap<String, ListedGroup> = groups
            .iter()
            .map(|(n, g)| {
                (
                    n.clone(),
                    ListedGroup {
                        name: n.clone(),
                        protocol_type: g.protocol_type.clone(),
                        state: g.state.name(),
                        group_type: "classic",
                    },
                )
            })
            .collect();
        for (name, state) in self.list_consumer_groups() {
            out.insert(
                name.clone(),
                ListedGroup {
                    name,
                    protocol_type: "consumer".to_string(),
                    state: state.name(),
                    group_type: "consumer",
                },
            );
        }
        for name in self.offsets.borrow().keys() {
            out.entry(name.clone()).or_insert_with(|| ListedGroup {
                name: name.clone(),
                protocol_type: "consumer".to_string(),
                state: GroupState::Empty.name(),
                group_type: "classic",
            });
        }
        out.into_values().collect()
    }

    /// DescribeGroups of one group.
    pub fn describe_classic(&self, group: &str) -> ClassicDescription {
        if self.is_consumer_group(group) {
            return ClassicDescription::ConsumerGroup;
        }
        match self.describe(group) {
            Some((s, t, p, m)) => ClassicDescription::Classic(s, t, p, m),
            None => ClassicDescription::NotFound,
        }
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
        if let Some(subscribed) = self.consumer_subscribed_of(group, topics) {
            return Ok(subscribed);
        }
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
        let consumer_group = match self.delete_consumer_group(group) {
            Some(Err(e)) => return Err(e),
            Some(Ok(())) => true,
            None => false,
        };
        let mut groups = self.groups.borrow_mut();
        if let Some(g) = groups.get(group) {
            if !g.members.is_empty() {
                return Err(NON_EMPTY_GROUP);
            }
        } else if !consumer_group && !self.offsets.borrow().contains_key(group) {
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
