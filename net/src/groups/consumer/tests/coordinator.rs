//! The coordinator's rules around consumer groups: one protocol per group name, commits and
//! fetches checked against member epochs, listing and deleting.

use std::sync::Arc;

use crate::config::NetConfig;
use crate::groups::{
    Coordinator, JoinRequest, GROUP_ID_NOT_FOUND, INCONSISTENT_GROUP_PROTOCOL, NONE,
    NON_EMPTY_GROUP,
};
use crate::metadata::{Metadata, TopicConfigs, TopicMeta};

use super::*;

fn metadata() -> Arc<Metadata> {
    Arc::new(Metadata {
        topics: vec![TopicMeta {
            name: "t".into(),
            topic_id: *tid(1).as_bytes(),
            partition_shards: vec![0; 4],
            config: TopicConfigs::default(),
        }],
        producer_id_block_end: 0,
    })
}

fn classic_join(member: &str) -> JoinRequest {
    JoinRequest {
        group: "g".into(),
        member_id: member.into(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 10_000,
        rebalance_timeout_ms: 10_000,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), bytes::Bytes::from_static(b"meta"))],
    }
}

#[test]
fn a_group_is_classic_or_consumer_never_both() {
    use futures_lite::future::{block_on, poll_once};
    let c = Coordinator::new(&NetConfig::default());
    let m = metadata();
    let now = Instant::now();
    let a = c
        .consumer_heartbeat("g", join("a", &["t"]), 1, &m, now)
        .unwrap();
    assert_eq!(a.member_epoch, 1);
    // A classic member may not join a consumer group with members.
    let out = block_on(c.join(classic_join("")));
    assert_eq!(out.error, INCONSISTENT_GROUP_PROTOCOL);
    // Once the consumer group is empty, a classic member may take the name.
    let leave = HeartbeatRequest {
        member_epoch: LEAVE_EPOCH,
        ..beat("a", 1, &Assignment::new())
    };
    c.consumer_heartbeat("g", leave, 1, &m, now).unwrap();
    let mut fut = Box::pin(c.join(classic_join("")));
    assert!(
        block_on(poll_once(&mut fut)).is_none(),
        "joining the classic group"
    );
    assert!(!c.is_consumer_group("g"));
    // And a consumer protocol member may not join that classic group.
    let e = c
        .consumer_heartbeat("g", join("b", &["t"]), 1, &m, now)
        .unwrap_err();
    assert_eq!(e.code, GROUP_ID_NOT_FOUND);
    let e = c
        .consumer_heartbeat("g", beat("b", 3, &Assignment::new()), 1, &m, now)
        .unwrap_err();
    assert_eq!(
        e.code, GROUP_ID_NOT_FOUND,
        "a heartbeat for a classic group"
    );
    // A heartbeat for a group that does not exist (as after a restart): rejoin.
    let e = c
        .consumer_heartbeat("nope", beat("b", 3, &Assignment::new()), 1, &m, now)
        .unwrap_err();
    assert_eq!(e.code, UNKNOWN_MEMBER_ID);
}

#[test]
fn commits_and_fetches_check_the_member_epoch() {
    let c = Coordinator::new(&NetConfig::default());
    let m = metadata();
    let now = Instant::now();
    c.consumer_heartbeat("g", join("a", &["t"]), 1, &m, now)
        .unwrap();
    assert_eq!(c.check_commit("g", "a", 1, 9), NONE);
    assert_eq!(c.check_commit("g", "a", 0, 9), STALE_MEMBER_EPOCH);
    assert_eq!(c.check_commit("g", "a", 2, 9), STALE_MEMBER_EPOCH);
    assert_eq!(c.check_commit("g", "x", 1, 9), UNKNOWN_MEMBER_ID);
    assert_eq!(c.check_commit("g", "a", 1, 8), UNSUPPORTED_VERSION);
    // No epoch: only while the group has no members.
    assert_eq!(c.check_commit("g", "", -1, 9), UNKNOWN_MEMBER_ID);
    assert_eq!(c.check_consumer_fetch("g", Some("a"), 1), NONE);
    assert_eq!(
        c.check_consumer_fetch("g", Some("a"), 7),
        STALE_MEMBER_EPOCH
    );
    assert_eq!(c.check_consumer_fetch("g", Some("x"), 1), UNKNOWN_MEMBER_ID);
    assert_eq!(
        c.check_consumer_fetch("g", None, -1),
        NONE,
        "an admin fetch"
    );
    // v9+ with an epoch for a group that does not exist.
    assert_eq!(c.check_commit("none", "a", 1, 9), GROUP_ID_NOT_FOUND);
    // OffsetDelete keeps the offsets of the topics a member subscribes to.
    let asked = ["t".to_string(), "other".to_string()];
    assert_eq!(
        c.subscribed_of("g", &asked),
        Ok(std::collections::BTreeSet::from(["t".to_string()]))
    );
    // Listed as a consumer group; not deleted while it has members.
    let listed = c.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].group_type, listed[0].state),
        ("consumer", "Stable")
    );
    assert_eq!(c.delete("g"), Err(NON_EMPTY_GROUP));
    let leave = HeartbeatRequest {
        member_epoch: LEAVE_EPOCH,
        ..beat("a", 1, &Assignment::new())
    };
    c.consumer_heartbeat("g", leave, 1, &m, now).unwrap();
    assert_eq!(c.check_commit("g", "", -1, 9), NONE);
    assert_eq!(c.list()[0].state, "Empty");
    assert_eq!(c.delete("g"), Ok(vec![]));
    assert!(c.list().is_empty());
}
