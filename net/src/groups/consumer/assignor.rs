//! The server-side assignors: from the members' subscriptions, the partitions of the topics
//! they subscribe to and the previous target assignment, the next target assignment.
//!
//! - `uniform` (the default, as in Kafka): balanced and sticky. A member keeps what it had
//!   while it still subscribes to the topic and the partition exists; free partitions go to
//!   the eligible member with the fewest; then partitions move, one at a time, from a member
//!   to an eligible one holding at least two fewer, until no such move is left. With the same
//!   subscription everywhere that is exact balance (counts differ by at most one), reached by
//!   moving as few partitions as possible; with different subscriptions, no single move can
//!   improve it.
//! - `range`: per topic, the subscribed members in id order get contiguous ranges, the first
//!   `partitions % members` one partition more.
//!
//! Pure functions of their input, deterministic (ties go to the smaller member id).

use std::collections::{BTreeMap, BTreeSet};

use super::{Assignment, TopicId};

/// What an assignor sees.
pub struct AssignmentSpec<'a> {
    /// Each member's subscribed topics that exist, by member id.
    pub members: &'a BTreeMap<String, BTreeSet<TopicId>>,
    /// The partition count of every topic any member subscribes to.
    pub topics: &'a BTreeMap<TopicId, u32>,
    /// The previous target assignment, by member id.
    pub previous: &'a BTreeMap<String, Assignment>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    /// The assignors a member may ask for, the default first (Kafka's
    /// `group.consumer.assignors`).
    pub const ALL: [Assignor; 2] = [Assignor::Uniform, Assignor::Range];

    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    pub fn assign(self, spec: &AssignmentSpec<'_>) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Uniform => uniform(spec),
            Assignor::Range => range(spec),
        }
    }
}

fn uniform(spec: &AssignmentSpec<'_>) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = spec
        .members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    let exists = |t: &TopicId, p: i32| spec.topics.get(t).is_some_and(|n| p >= 0 && p < *n as i32);
    let mut owned: BTreeSet<(TopicId, i32)> = BTreeSet::new();
    // Stickiness: what each member had, while still valid.
    for (member, prev) in spec.previous {
        let (Some(subscribed), Some(a)) = (spec.members.get(member), out.get_mut(member)) else {
            continue;
        };
        for (t, p) in prev.iter() {
            if subscribed.contains(&t) && exists(&t, p) && owned.insert((t, p)) {
                a.insert(t, p);
            }
        }
    }
    // Who may take each topic.
    let mut eligible: BTreeMap<TopicId, Vec<&String>> = BTreeMap::new();
    for (member, subscribed) in spec.members {
        for t in subscribed {
            if spec.topics.contains_key(t) {
                eligible.entry(*t).or_default().push(member);
            }
        }
    }
    let count = |out: &BTreeMap<String, Assignment>, m: &str| out.get(m).map_or(0, Assignment::len);
    // Free partitions to the eligible member with the fewest.
    for (t, n) in spec.topics {
        let Some(candidates) = eligible.get(t) else {
            continue;
        };
        for p in 0..*n as i32 {
            if owned.contains(&(*t, p)) {
                continue;
            }
            let best = candidates
                .iter()
                .min_by_key(|m| (count(&out, m), **m))
                .map(|m| (*m).clone());
            if let Some(m) = best {
                if let Some(a) = out.get_mut(&m) {
                    a.insert(*t, p);
                    owned.insert((*t, p));
                }
            }
        }
    }
    // Balance: move one partition at a time from a member to an eligible one with at least
    // two fewer. Each move lowers the sum of squared counts by at least 2, so this ends.
    loop {
        let mut givers: Vec<(usize, String)> =
            out.iter().map(|(m, a)| (a.len(), m.clone())).collect();
        givers.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut moved = None;
        'search: for (n, giver) in &givers {
            if *n < 2 {
                break;
            }
            let Some(held) = out.get(giver) else { continue };
            // The highest partitions go first: the giver keeps its lowest.
            for (t, p) in held.iter().rev() {
                let receiver = eligible
                    .get(&t)
                    .into_iter()
                    .flatten()
                    .filter(|m| count(&out, m) + 2 <= *n)
                    .min_by_key(|m| (count(&out, m), **m));
                if let Some(r) = receiver {
                    moved = Some((giver.clone(), (*r).clone(), t, p));
                    break 'search;
                }
            }
        }
        let Some((from, to, t, p)) = moved else { break };
        if let Some(a) = out.get_mut(&from) {
            a.remove(t, p);
        }
        if let Some(a) = out.get_mut(&to) {
            a.insert(t, p);
        }
    }
    out
}

fn range(spec: &AssignmentSpec<'_>) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = spec
        .members
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (t, n) in spec.topics {
        let members: Vec<&String> = spec
            .members
            .iter()
            .filter(|(_, s)| s.contains(t))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() {
            continue;
        }
        let (each, extra) = (*n as usize / members.len(), *n as usize % members.len());
        let mut next = 0i32;
        for (i, m) in members.iter().enumerate() {
            let take = each + usize::from(i < extra);
            if let Some(a) = out.get_mut(*m) {
                for p in next..next + take as i32 {
                    a.insert(*t, p);
                }
            }
            next += take as i32;
        }
    }
    out
}
