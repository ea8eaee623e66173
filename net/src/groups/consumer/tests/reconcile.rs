//! Reconciliation of one member, step by step: revoke first, then assign, and never a
//! partition another member still holds.

use super::super::reconcile::reconcile;
use super::*;

fn member(epoch: i32, assigned: Assignment) -> ConsumerMember {
    let mut m = ConsumerMember::new("m".into(), Instant::now());
    m.epoch = epoch;
    m.assigned = assigned;
    m
}

#[test]
fn a_stable_member_at_the_target_epoch_stays() {
    let m = member(3, parts(1, &[0]));
    let next = reconcile(&m, 3, &parts(1, &[0, 1]), &|_, _| None, None);
    assert_eq!(next, m);
}

#[test]
fn revoke_first_then_assign() {
    let m = member(1, parts(1, &[0, 1]));
    let target = parts(1, &[1, 2]);
    // Still owning 0: it must give it up first, at its epoch, and gets nothing new.
    let owned = parts(1, &[0, 1]);
    let step = reconcile(&m, 2, &target, &|_, _| None, Some(&owned));
    assert_eq!(step.state, MemberState::UnrevokedPartitions);
    assert_eq!(step.epoch, 1);
    assert_eq!(step.assigned, parts(1, &[1]));
    assert_eq!(step.pending_revocation, parts(1, &[0]));
    // Not reporting what it owns counts as still owning it.
    let silent = reconcile(&step, 2, &target, &|_, _| None, None);
    assert_eq!(silent, step);
    // Once it reports 0 gone: the target epoch, and partition 2.
    let owned = parts(1, &[1]);
    let done = reconcile(&step, 2, &target, &|_, _| None, Some(&owned));
    assert_eq!(done.state, MemberState::Stable);
    assert_eq!((done.epoch, done.previous_epoch), (2, 1));
    assert_eq!(done.assigned, parts(1, &[1, 2]));
    assert!(done.pending_revocation.is_empty());
}

#[test]
fn a_partition_held_by_another_member_waits() {
    let m = member(1, parts(1, &[0]));
    let target = parts(1, &[0, 1]);
    // Partition 1 is still held (at epoch 1) by someone else.
    let held = |t: TopicId, p: i32| (t == tid(1) && p == 1).then_some(1);
    let owned = parts(1, &[0]);
    let step = reconcile(&m, 2, &target, &held, Some(&owned));
    assert_eq!(step.state, MemberState::UnreleasedPartitions);
    assert_eq!(step.epoch, 2);
    assert_eq!(step.assigned, parts(1, &[0]));
    // Released: the next heartbeat gets it.
    let done = reconcile(&step, 2, &target, &|_, _| None, Some(&owned));
    assert_eq!(done.state, MemberState::Stable);
    assert_eq!(done.assigned, parts(1, &[0, 1]));
}

#[test]
fn a_member_that_already_dropped_what_it_loses_moves_on_at_once() {
    let m = member(1, parts(1, &[0, 1]));
    let owned = parts(1, &[1]);
    let next = reconcile(&m, 2, &parts(1, &[1]), &|_, _| None, Some(&owned));
    assert_eq!(next.state, MemberState::Stable);
    assert_eq!(next.epoch, 2);
    assert_eq!(next.assigned, parts(1, &[1]));
}
