//! The assignors: balance, stickiness, subscriptions respected, every partition once.

use std::collections::{BTreeMap, BTreeSet};

use super::super::assignor::AssignmentSpec;
use super::*;

fn subs(members: &[(&str, &[u8])]) -> BTreeMap<String, BTreeSet<TopicId>> {
    members
        .iter()
        .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| tid(*t)).collect()))
        .collect()
}

fn topics(ts: &[(u8, u32)]) -> BTreeMap<TopicId, u32> {
    ts.iter().map(|(t, n)| (tid(*t), *n)).collect()
}

fn run(
    a: Assignor,
    members: &BTreeMap<String, BTreeSet<TopicId>>,
    topics: &BTreeMap<TopicId, u32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let out = a.assign(&AssignmentSpec {
        members,
        topics,
        previous,
    });
    // Every partition of a subscribed topic exactly once, only to a subscriber.
    let mut seen = BTreeSet::new();
    for (m, asg) in &out {
        for (t, p) in asg.iter() {
            assert!(
                members[m].contains(&t),
                "{m} got {t}:{p} without subscribing"
            );
            assert!(seen.insert((t, p)), "{t}:{p} assigned twice");
        }
    }
    for (t, n) in topics {
        if members.values().any(|s| s.contains(t)) {
            for p in 0..*n as i32 {
                assert!(seen.contains(&(*t, p)), "{t}:{p} not assigned");
            }
        }
    }
    out
}

fn counts(out: &BTreeMap<String, Assignment>) -> Vec<usize> {
    out.values().map(Assignment::len).collect()
}

#[test]
fn uniform_balances_the_same_subscription() {
    let m = subs(&[("a", &[1, 2]), ("b", &[1, 2]), ("c", &[1, 2])]);
    let t = topics(&[(1, 6), (2, 4)]);
    let out = run(Assignor::Uniform, &m, &t, &BTreeMap::new());
    let mut c = counts(&out);
    c.sort();
    assert_eq!(c, vec![3, 3, 4]);
}

#[test]
fn uniform_is_sticky_when_a_member_joins() {
    let t = topics(&[(1, 4)]);
    let one = subs(&[("a", &[1])]);
    let first = run(Assignor::Uniform, &one, &t, &BTreeMap::new());
    assert_eq!(first["a"], parts(1, &[0, 1, 2, 3]));
    let two = subs(&[("a", &[1]), ("b", &[1])]);
    let second = run(Assignor::Uniform, &two, &t, &first);
    // Two each, and a keeps two of its own: only two partitions move.
    assert_eq!(counts(&second), vec![2, 2]);
    assert!(second["a"].is_subset_of(&first["a"]));
    assert_eq!(second["a"], parts(1, &[0, 1]));
    assert_eq!(second["b"], parts(1, &[2, 3]));
    // A third member takes one from each of the busiest, nothing else moves.
    let three = subs(&[("a", &[1]), ("b", &[1]), ("c", &[1])]);
    let third = run(Assignor::Uniform, &three, &t, &second);
    let mut c = counts(&third);
    c.sort();
    assert_eq!(c, vec![1, 1, 2]);
    assert!(third["a"].is_subset_of(&second["a"]));
    assert!(third["b"].is_subset_of(&second["b"]));
    // When it leaves again, its partition goes back and the others keep theirs.
    let back = run(Assignor::Uniform, &two, &t, &third);
    assert!(third["a"].is_subset_of(&back["a"]));
    assert!(third["b"].is_subset_of(&back["b"]));
    assert_eq!(counts(&back), vec![2, 2]);
}

#[test]
fn uniform_respects_different_subscriptions() {
    // a takes topics 1 and 2, b only 2: b gets its share of 2, a all of 1.
    let m = subs(&[("a", &[1, 2]), ("b", &[2])]);
    let t = topics(&[(1, 2), (2, 4)]);
    let out = run(Assignor::Uniform, &m, &t, &BTreeMap::new());
    assert_eq!(counts(&out), vec![3, 3]);
    assert_eq!(out["b"].len(), 3);
    assert!(out["b"].iter().all(|(t, _)| t == tid(2)));
    // No single move between eligible members would improve it.
    for (giver, ga) in &out {
        for (t, _) in ga.iter() {
            for (taker, ta) in &out {
                if m[taker].contains(&t) {
                    assert!(ga.len() <= ta.len() + 1, "{giver} -> {taker} would balance");
                }
            }
        }
    }
}

#[test]
fn uniform_drops_what_is_gone_and_assigns_what_is_new() {
    let m = subs(&[("a", &[1]), ("b", &[1])]);
    let before = run(Assignor::Uniform, &m, &topics(&[(1, 2)]), &BTreeMap::new());
    // The topic grows from 2 to 6 partitions: the new ones are shared out, the old stay.
    let after = run(Assignor::Uniform, &m, &topics(&[(1, 6)]), &before);
    assert_eq!(counts(&after), vec![3, 3]);
    assert!(before["a"].is_subset_of(&after["a"]));
    assert!(before["b"].is_subset_of(&after["b"]));
    // A member that unsubscribes loses everything; a topic that goes is dropped.
    let only_a = subs(&[("a", &[1]), ("b", &[])]);
    let out = run(Assignor::Uniform, &only_a, &topics(&[(1, 6)]), &after);
    assert_eq!(out["a"].len(), 6);
    assert!(out["b"].is_empty());
    let gone = run(Assignor::Uniform, &m, &BTreeMap::new(), &after);
    assert!(gone.values().all(Assignment::is_empty));
}

#[test]
fn range_gives_contiguous_ranges_per_topic() {
    let m = subs(&[("a", &[1]), ("b", &[1]), ("c", &[1])]);
    let out = run(Assignor::Range, &m, &topics(&[(1, 5)]), &BTreeMap::new());
    assert_eq!(out["a"], parts(1, &[0, 1]));
    assert_eq!(out["b"], parts(1, &[2, 3]));
    assert_eq!(out["c"], parts(1, &[4]));
    assert_eq!(Assignor::by_name("range"), Some(Assignor::Range));
    assert_eq!(Assignor::by_name("uniform"), Some(Assignor::Uniform));
    assert_eq!(Assignor::by_name("sticky"), None);
}
