//! What admin requests see of the groups: ListGroups, DescribeGroups, the subscriptions
//! OffsetDelete must respect, and DeleteGroups (only an empty group).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;

use super::{Coordinator, GroupState, Member, GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP};

impl Coordinator {
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
