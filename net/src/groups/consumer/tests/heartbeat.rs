//! A group through heartbeats: joins, a rebalance handed over partition by partition,
//! epochs checked, leaving, static members, timers and topic changes.

use super::super::heartbeat::validate;
use super::*;

const TOPICS: &[(&str, u8, u32)] = &[("t", 1, 4)];

#[test]
fn a_second_member_gets_half_only_after_the_first_revoked_it() {
    let mut b = Bench::new(TOPICS);
    let a1 = b.ok(&join("a", &["t"]));
    assert_eq!(a1.member_epoch, 1);
    assert_eq!(a1.assignment, Some(parts(1, &[0, 1, 2, 3])));
    assert_eq!(b.g.state(), ConsumerGroupState::Stable);
    let all = parts(1, &[0, 1, 2, 3]);
    assert_eq!(b.ok(&beat("a", 1, &all)).assignment, None, "nothing new");

    // b joins: epoch 2, but a still holds everything, so b gets nothing yet.
    let b1 = b.ok(&join("b", &["t"]));
    assert_eq!(b.g.group_epoch, 2);
    assert_eq!(b1.member_epoch, 2);
    assert_eq!(b1.assignment, Some(Assignment::new()));
    assert_eq!(b.g.state(), ConsumerGroupState::Reconciling);
    assert_eq!(b.g.members["b"].state, MemberState::UnreleasedPartitions);

    // a is told to give up 2 and 3, at its epoch 1 (its commits of them still count).
    let a2 = b.ok(&beat("a", 1, &all));
    assert_eq!(a2.member_epoch, 1);
    assert_eq!(a2.assignment, Some(parts(1, &[0, 1])));
    assert_eq!(b.g.members["a"].state, MemberState::UnrevokedPartitions);
    // b asks again: still nothing, a has not let go.
    let b2 = b.ok(&beat("b", 2, &Assignment::new()));
    assert_eq!(b2.assignment, None);
    assert!(b.g.members["b"].assigned.is_empty());

    // a reports it let go: epoch 2; then b gets 2 and 3.
    let a3 = b.ok(&beat("a", 1, &parts(1, &[0, 1])));
    assert_eq!(a3.member_epoch, 2);
    let b3 = b.ok(&beat("b", 2, &Assignment::new()));
    assert_eq!(b3.assignment, Some(parts(1, &[2, 3])));
    assert_eq!(b.g.state(), ConsumerGroupState::Stable);

    // a leaves: b gets everything once it heartbeats.
    let left = b.ok(&HeartbeatRequest {
        member_epoch: LEAVE_EPOCH,
        ..beat("a", 2, &Assignment::new())
    });
    assert_eq!(left.member_epoch, LEAVE_EPOCH);
    assert_eq!(b.g.group_epoch, 3);
    let b4 = b.ok(&beat("b", 2, &parts(1, &[2, 3])));
    assert_eq!(b4.member_epoch, 3);
    assert_eq!(b4.assignment, Some(all));
}

#[test]
fn epochs_are_checked() {
    let mut b = Bench::new(TOPICS);
    b.ok(&join("a", &["t"]));
    let all = parts(1, &[0, 1, 2, 3]);
    let err = |b: &mut Bench, r| b.send(&r).map(|_| ()).unwrap_err().code;
    assert_eq!(
        err(&mut b, beat("a", 2, &all)),
        FENCED_MEMBER_EPOCH,
        "ahead"
    );
    assert_eq!(err(&mut b, beat("x", 1, &all)), UNKNOWN_MEMBER_ID);
    // A lost answer: the previous epoch (0) with a subset of what it has is accepted.
    assert_eq!(b.ok(&beat("a", 0, &Assignment::new())).member_epoch, 1);
    b.ok(&join("b", &["t"]));
    b.ok(&beat("a", 1, &all));
    b.ok(&beat("a", 1, &parts(1, &[0, 1])));
    assert_eq!(b.g.members["a"].epoch, 2);
    // Behind, and not the previous epoch: fenced.
    assert_eq!(
        err(&mut b, beat("a", 0, &Assignment::new())),
        FENCED_MEMBER_EPOCH
    );
    // The previous epoch but owning more than it has now: fenced.
    assert_eq!(err(&mut b, beat("a", 1, &all)), FENCED_MEMBER_EPOCH);
    // Leaving as a member that is not there.
    let leave = HeartbeatRequest {
        member_epoch: LEAVE_EPOCH,
        ..beat("nobody", 1, &all)
    };
    assert_eq!(err(&mut b, leave), UNKNOWN_MEMBER_ID);
}

#[test]
fn silent_members_and_slow_revokers_are_fenced() {
    let mut b = Bench::new(TOPICS);
    b.ok(&join("a", &["t"]));
    b.ok(&join("b", &["t"]));
    // a is asked to revoke and never does; b keeps heartbeating.
    let all = parts(1, &[0, 1, 2, 3]);
    b.ok(&beat("a", 1, &all));
    assert_eq!(b.g.members["a"].state, MemberState::UnrevokedPartitions);
    let expired =
        b.g.expire(b.now + Duration::from_secs(29), &b.image, b.version);
    assert!(expired.is_empty());
    let expired =
        b.g.expire(b.now + Duration::from_secs(31), &b.image, b.version);
    assert_eq!(
        expired,
        vec![(
            "a".to_string(),
            "did not revoke within its rebalance timeout"
        )]
    );
    b.g.check_exclusive().unwrap();
    let b2 = b.ok(&beat("b", 2, &Assignment::new()));
    assert_eq!(b2.assignment, Some(all));
    // b goes silent: its session ends after 45 s.
    let later = b.now + Duration::from_secs(46);
    let expired = b.g.expire(later, &b.image, b.version);
    assert_eq!(expired, vec![("b".to_string(), "session expired")]);
    assert_eq!(b.g.state(), ConsumerGroupState::Empty);
}

#[test]
fn a_static_member_keeps_its_partitions_while_away() {
    let mut b = Bench::new(TOPICS);
    let static_join = |id: &str| HeartbeatRequest {
        instance_id: Some("i1".into()),
        ..join(id, &["t"])
    };
    b.ok(&static_join("a"));
    b.ok(&join("b", &["t"]));
    let all = parts(1, &[0, 1, 2, 3]);
    b.ok(&HeartbeatRequest {
        instance_id: Some("i1".into()),
        ..beat("a", 1, &all)
    });
    b.ok(&HeartbeatRequest {
        instance_id: Some("i1".into()),
        ..beat("a", 1, &parts(1, &[0, 1]))
    });
    let kept = b.g.members["a"].assigned.clone();
    assert_eq!(kept.len(), 2);
    // Another process with the same instance id cannot join while a is there.
    let e = b.send(&static_join("a2")).unwrap_err();
    assert_eq!(e.code, UNRELEASED_INSTANCE_ID);
    // a leaves for now (-2): it keeps its partitions, nothing is reassigned.
    let epoch = b.g.group_epoch;
    let away = b.ok(&HeartbeatRequest {
        member_epoch: STATIC_LEAVE_EPOCH,
        instance_id: Some("i1".into()),
        ..beat("a", 2, &Assignment::new())
    });
    assert_eq!(away.member_epoch, STATIC_LEAVE_EPOCH);
    assert_eq!(b.g.group_epoch, epoch);
    assert_eq!(b.g.members["a"].assigned, kept);
    // It comes back under a new member id and gets the same partitions, without a rebalance.
    let back = b.ok(&static_join("a2"));
    assert_eq!(back.assignment, Some(kept));
    assert_eq!(b.g.group_epoch, epoch);
    assert!(!b.g.members.contains_key("a"));
    // The old member id is fenced.
    let e = b
        .send(&HeartbeatRequest {
            instance_id: Some("i1".into()),
            ..beat("a", 2, &Assignment::new())
        })
        .unwrap_err();
    assert_eq!(e.code, FENCED_INSTANCE_ID);
}

#[test]
fn new_topics_and_partitions_move_the_group_epoch() {
    let mut b = Bench::new(&[("t", 1, 2)]);
    // Subscribed to a topic that does not exist yet: an empty assignment, no error.
    let a1 = b.ok(&join("a", &["t", "later"]));
    assert_eq!(a1.assignment, Some(parts(1, &[0, 1])));
    let epoch = b.g.group_epoch;
    // Same topics: a heartbeat changes nothing.
    b.ok(&beat("a", a1.member_epoch, &parts(1, &[0, 1])));
    assert_eq!(b.g.group_epoch, epoch);
    // "t" grows to 3 partitions and "later" appears.
    b.set_topics(&[("t", 1, 3), ("later", 2, 1)]);
    let a2 = b.ok(&beat("a", a1.member_epoch, &parts(1, &[0, 1])));
    assert_eq!(b.g.group_epoch, epoch + 1);
    let mut want = parts(1, &[0, 1, 2]);
    want.insert(tid(2), 0);
    assert_eq!(a2.assignment, Some(want));
}

#[test]
fn a_regex_subscription_follows_the_topics() {
    let mut b = Bench::new(&[("orders-eu", 1, 1), ("orders-us", 2, 1), ("other", 3, 1)]);
    let a1 = b.ok(&HeartbeatRequest {
        subscribed_topic_names: None,
        subscribed_topic_regex: Some("orders-.*".into()),
        ..join("a", &[])
    });
    let mut want = parts(1, &[0]);
    want.insert(tid(2), 0);
    assert_eq!(a1.assignment, Some(want.clone()));
    // A new matching topic joins the subscription; internal topics never match.
    b.set_topics(&[
        ("orders-eu", 1, 1),
        ("orders-us", 2, 1),
        ("orders-jp", 4, 1),
        ("__orders-internal", 5, 1),
    ]);
    let a2 = b.ok(&beat("a", a1.member_epoch, &want));
    want.insert(tid(4), 0);
    assert_eq!(a2.assignment, Some(want));
}

#[test]
fn bad_requests_get_kafka_errors() {
    let v = 1;
    let code = |g: &str, r: &HeartbeatRequest| validate(g, r, v).unwrap_err().code;
    assert_eq!(code("", &join("a", &["t"])), INVALID_REQUEST);
    assert_eq!(
        code("g", &join("a", &[])),
        INVALID_REQUEST,
        "nothing subscribed"
    );
    assert_eq!(
        code("g", &join("", &["t"])),
        INVALID_REQUEST,
        "v1 needs a member id"
    );
    let no_timeout = HeartbeatRequest {
        rebalance_timeout_ms: -1,
        ..join("a", &["t"])
    };
    assert_eq!(code("g", &no_timeout), INVALID_REQUEST);
    let owning = HeartbeatRequest {
        owned: Some(parts(1, &[0])),
        ..join("a", &["t"])
    };
    assert_eq!(code("g", &owning), INVALID_REQUEST, "owning at join");
    let epoch = HeartbeatRequest {
        member_epoch: -3,
        ..join("a", &["t"])
    };
    assert_eq!(code("g", &epoch), INVALID_REQUEST);
    let assignor = HeartbeatRequest {
        server_assignor: Some("sticky".into()),
        ..join("a", &["t"])
    };
    assert_eq!(code("g", &assignor), UNSUPPORTED_ASSIGNOR);
    let regex = HeartbeatRequest {
        subscribed_topic_names: None,
        subscribed_topic_regex: Some("orders-(".into()),
        ..join("a", &[])
    };
    assert_eq!(code("g", &regex), INVALID_REGULAR_EXPRESSION);
    let static_leave = HeartbeatRequest {
        member_epoch: STATIC_LEAVE_EPOCH,
        ..beat("a", 0, &Assignment::new())
    };
    assert_eq!(
        code("g", &static_leave),
        INVALID_REQUEST,
        "-2 needs an instance id"
    );
    // v0 lets the coordinator name the member.
    assert_eq!(validate("g", &join("", &["t"]), 0), Ok(()));
    let range = HeartbeatRequest {
        server_assignor: Some("range".into()),
        ..join("a", &["t"])
    };
    assert_eq!(validate("g", &range, v), Ok(()));
}
