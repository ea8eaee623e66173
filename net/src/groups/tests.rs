//! The group state machine driven by hand: joins, syncs, heartbeats, commits, rebalances,
//! deletes, and OffsetDelete's subscriptions.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::{block_on, poll_once};

use super::*;
use crate::config::NetConfig;

fn coordinator() -> Coordinator {
    Coordinator::new(&NetConfig {
        group_initial_rebalance_delay_ms: 50,
        ..NetConfig::default()
    })
}

/// Runs two joins together: both register, then the clock passes the initial delay.
fn join_two(c: &Coordinator, a: JoinRequest, b: JoinRequest) -> (JoinOutcome, JoinOutcome) {
    let mut fa = Box::pin(c.join(a));
    let mut fb = Box::pin(c.join(b));
    assert!(block_on(poll_once(&mut fa)).is_none());
    assert!(block_on(poll_once(&mut fb)).is_none());
    c.tick(Instant::now() + Duration::from_secs(1));
    (block_on(fa), block_on(fb))
}

/// Runs a join that completes at the next tick.
fn join_one(c: &Coordinator, r: JoinRequest) -> JoinOutcome {
    let mut f = Box::pin(c.join(r));
    if let Some(o) = block_on(poll_once(&mut f)) {
        return o;
    }
    c.tick(Instant::now() + Duration::from_secs(1));
    block_on(f)
}

#[test]
fn offset_delete_keeps_the_topics_a_member_subscribes_to() {
    use kafka_protocol::messages::ConsumerProtocolSubscription;
    use kafka_protocol::protocol::{Encodable, StrBytes};
    let c = coordinator();
    let topics = vec!["a".to_string(), "b".to_string()];
    assert_eq!(c.subscribed_of("g", &topics), Err(GROUP_ID_NOT_FOUND));
    // Committed offsets and no members: everything may go.
    c.apply_commit(
        "g",
        "a",
        0,
        Some(Committed {
            offset: 1,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
        }),
    );
    assert_eq!(c.subscribed_of("g", &topics), Ok(BTreeSet::new()));
    // A member subscribed to "a" (a v1 subscription, as Java clients write it).
    let mut meta = bytes::BytesMut::new();
    meta.extend_from_slice(&1i16.to_be_bytes());
    ConsumerProtocolSubscription::default()
        .with_topics(vec![StrBytes::from_static_str("a")])
        .encode(&mut meta, 1)
        .unwrap();
    let mut r = join("");
    r.protocols = vec![("range".into(), meta.freeze())];
    let joined = join_one(&c, r);
    assert_eq!(joined.error, NONE);
    assert_eq!(
        c.subscribed_of("g", &topics),
        Ok(BTreeSet::from(["a".to_string()]))
    );
    // A subscription that does not decode keeps every topic asked about.
    let c2 = coordinator();
    assert_eq!(join_one(&c2, join("")).error, NONE);
    assert_eq!(
        c2.subscribed_of("g", &topics),
        Ok(topics.iter().cloned().collect())
    );
}

fn join(member: &str) -> JoinRequest {
    JoinRequest {
        group: "g".into(),
        member_id: member.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
    }
}

#[test]
fn join_sync_heartbeat_commit_and_rebalance() {
    let c = coordinator();
    // Two members join together: one generation, one leader who sees both.
    let (a, b) = join_two(&c, join(""), join(""));
    assert_eq!((a.error, b.error), (NONE, NONE));
    assert_eq!((a.generation, b.generation), (1, 1));
    let (leader, follower) = if a.member_id == a.leader {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(leader.members.len(), 2);
    assert!(follower.members.is_empty());
    assert_eq!(leader.protocol, "range");

    // The follower's sync waits for the leader's assignments.
    let assignments = vec![
        (leader.member_id.clone(), Bytes::from_static(b"A")),
        (follower.member_id.clone(), Bytes::from_static(b"B")),
    ];
    let mut f = Box::pin(c.sync("g", &follower.member_id, 1, vec![]));
    assert!(
        block_on(poll_once(&mut f)).is_none(),
        "waits for the leader"
    );
    let ls = block_on(c.sync("g", &leader.member_id, 1, assignments));
    let fs = block_on(f);
    assert_eq!((fs.error, &fs.assignment[..]), (NONE, &b"B"[..]));
    assert_eq!(&ls.assignment[..], b"A");
    assert_eq!(c.heartbeat("g", &follower.member_id, 1), NONE);
    assert_eq!(c.heartbeat("g", &follower.member_id, 0), ILLEGAL_GENERATION);
    assert_eq!(c.heartbeat("g", "stranger", 1), UNKNOWN_MEMBER_ID);
    assert_eq!(c.check_commit("g", &follower.member_id, 1, 8), NONE);

    // A follower rejoining unchanged keeps its assignment and its generation.
    let again = join_one(&c, join(&follower.member_id));
    assert_eq!((again.error, again.generation), (NONE, 1));
    assert_eq!(
        &block_on(c.sync("g", &follower.member_id, 1, vec![])).assignment[..],
        b"B"
    );

    // A leaving member starts a rebalance: the others learn it from their heartbeat, may
    // still commit, and rejoin into generation 2.
    assert_eq!(
        c.leave("g", &[(follower.member_id.clone(), None)]),
        vec![NONE]
    );
    assert_eq!(
        c.heartbeat("g", &leader.member_id, 1),
        REBALANCE_IN_PROGRESS
    );
    assert_eq!(c.check_commit("g", &leader.member_id, 1, 8), NONE);
    let rejoined = join_one(&c, join(&leader.member_id));
    assert_eq!((rejoined.generation, rejoined.members.len()), (2, 1));
    // Between join and sync, commits wait for the new assignment.
    assert_eq!(
        c.check_commit("g", &leader.member_id, 2, 8),
        REBALANCE_IN_PROGRESS
    );
    assert_eq!(
        c.leave("g", &[(leader.member_id.clone(), None)]),
        vec![NONE]
    );
    assert_eq!(c.describe("g").map(|d| d.0), Some(GroupState::Empty));
}

#[test]
fn bad_joins_and_deletes() {
    let c = coordinator();
    let mut short = join("");
    short.session_timeout_ms = 10;
    assert_eq!(join_one(&c, short).error, INVALID_SESSION_TIMEOUT);
    assert_eq!(join_one(&c, join("ghost")).error, UNKNOWN_MEMBER_ID);
    let mut empty_group = join("");
    empty_group.group.clear();
    assert_eq!(join_one(&c, empty_group).error, INVALID_GROUP_ID);
    let a = join_one(&c, join(""));
    let mut other = join("");
    other.protocols = vec![("sticky".into(), Bytes::new())];
    assert_eq!(join_one(&c, other).error, INCONSISTENT_GROUP_PROTOCOL);
    assert_eq!(c.delete("g"), Err(NON_EMPTY_GROUP));
    assert_eq!(c.delete("nope"), Err(GROUP_ID_NOT_FOUND));
    c.apply_commit(
        "g",
        "t",
        0,
        Some(Committed {
            offset: 5,
            leader_epoch: -1,
            metadata: String::new(),
            commit_timestamp: 0,
        }),
    );
    c.leave("g", &[(a.member_id, None)]);
    assert_eq!(c.delete("g"), Ok(vec![("t".to_string(), 0)]));
    assert!(c.committed("g").is_empty());
}
