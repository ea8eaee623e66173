//! The topics a group resolves subscriptions against: name, id and partition count of every
//! topic, as of one metadata snapshot. Built once per snapshot (`Coordinator` keeps it until
//! the metadata changes) and read by every heartbeat.

use std::collections::{BTreeMap, BTreeSet};

use super::TopicId;

#[derive(Debug, Default)]
pub struct TopicImage {
    /// Name -> (id, partition count).
    by_name: BTreeMap<String, (TopicId, u32)>,
    by_id: BTreeMap<TopicId, String>,
    /// Topics a regex never matches (Kafka leaves internal topics out).
    internal: BTreeSet<String>,
}

impl TopicImage {
    /// From (name, id, partitions, internal) of every topic.
    pub fn new(topics: impl IntoIterator<Item = (String, TopicId, u32, bool)>) -> Self {
        let mut image = Self::default();
        for (name, id, partitions, internal) in topics {
            image.by_id.insert(id, name.clone());
            if internal {
                image.internal.insert(name.clone());
            }
            image.by_name.insert(name, (id, partitions));
        }
        image
    }

    /// A topic's id and partition count.
    pub fn get(&self, name: &str) -> Option<(TopicId, u32)> {
        self.by_name.get(name).copied()
    }

    pub fn name_of(&self, id: TopicId) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    /// The topics a (whole-name) regex matches, internal topics left out.
    pub fn matching<'a>(&'a self, re: &'a regex::Regex) -> impl Iterator<Item = &'a str> + 'a {
        self.by_name
            .keys()
            .filter(|n| !self.internal.contains(*n) && re.is_match(n))
            .map(String::as_str)
    }
}

/// Compiles a subscription regex the way Kafka applies it: to the whole topic name.
pub fn compile_regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| e.to_string())
}
