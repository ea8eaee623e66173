//! An assignment: partitions by topic id, as the consumer protocol names them. Used for a
//! member's target, its current partitions, those it must still revoke, and what it reports
//! it owns.

use std::collections::{BTreeMap, BTreeSet};

/// A topic's id (Kafka's Uuid; the metadata's `topic_id`).
pub type TopicId = uuid::Uuid;

/// Partitions by topic id. A topic with no partitions is never kept as an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment(BTreeMap<TopicId, BTreeSet<i32>>);

impl Assignment {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (TopicId, i32)>) -> Self {
        let mut a = Self::new();
        for (t, p) in pairs {
            a.insert(t, p);
        }
        a
    }

    pub fn insert(&mut self, topic: TopicId, partition: i32) {
        self.0.entry(topic).or_default().insert(partition);
    }

    pub fn remove(&mut self, topic: TopicId, partition: i32) {
        if let Some(ps) = self.0.get_mut(&topic) {
            ps.remove(&partition);
            if ps.is_empty() {
                self.0.remove(&topic);
            }
        }
    }

    pub fn contains(&self, topic: TopicId, partition: i32) -> bool {
        self.0.get(&topic).is_some_and(|ps| ps.contains(&partition))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of partitions.
    pub fn len(&self) -> usize {
        self.0.values().map(BTreeSet::len).sum()
    }

    /// Every (topic, partition), in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (TopicId, i32)> + '_ {
        self.0
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
    }

    /// Each topic and its partitions, in order.
    pub fn topics(&self) -> impl Iterator<Item = (TopicId, &BTreeSet<i32>)> + '_ {
        self.0.iter().map(|(t, ps)| (*t, ps))
    }

    /// What is in both.
    pub fn intersection(&self, other: &Assignment) -> Assignment {
        Assignment::from_pairs(self.iter().filter(|(t, p)| other.contains(*t, *p)))
    }

    /// What is in `self` and not in `other`.
    pub fn difference(&self, other: &Assignment) -> Assignment {
        Assignment::from_pairs(self.iter().filter(|(t, p)| !other.contains(*t, *p)))
    }

    pub fn union(&self, other: &Assignment) -> Assignment {
        Assignment::from_pairs(self.iter().chain(other.iter()))
    }

    pub fn is_subset_of(&self, other: &Assignment) -> bool {
        self.iter().all(|(t, p)| other.contains(t, p))
    }

    /// Whether any partition is in both.
    pub fn overlaps(&self, other: &Assignment) -> bool {
        self.iter().any(|(t, p)| other.contains(t, p))
    }
}

impl std::fmt::Display for Assignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (t, ps) in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            let short = t.simple().to_string();
            write!(f, "{}:{:?}", &short[..8], ps)?;
        }
        Ok(())
    }
}
