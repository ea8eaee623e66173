//! The leader's view of one partition's replicas: the in-sync set (ISR) and the high
//! watermark, with Kafka's rules and Spate's one change to them (the high watermark follows
//! what the ISR has made *durable*, not what it has fetched).
//!
//! - A follower is caught up at a fetch if it asks for the leader's log end, or for at least
//!   the log end the leader had at its previous fetch (Kafka's `lastCaughtUpTime`). An ISR
//!   member not caught up for `replica_lag_time_max_ms` is proposed for removal.
//! - A replica out of the ISR whose durable log end reaches the high watermark, and the start
//!   of this leader's epoch (so that it truncated its divergent tail), is proposed for adding.
//! - One change is in flight at a time, sent to the controller (AlterPartition) with the
//!   partition epoch it applies to, and sent again until the metadata shows the outcome;
//!   until the next partition epoch the high watermark is computed over the *maximal* ISR
//!   (the committed ISR plus every member a change proposed at this epoch adds, refused ones
//!   included, since a delayed copy may still commit), so that whatever ISR the controller
//!   commits, every member of it holds every record below the high watermark.
//! - The high watermark is the smallest durable log end over the maximal ISR (the leader's
//!   own included) and never goes back.
//! - acks=all is refused up front if the committed ISR is smaller than `min.insync.replicas`
//!   (NOT_ENOUGH_REPLICAS); once the high watermark passes a batch it is acknowledged, or
//!   answered NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below the minimum meanwhile.
//!
//! Sans-I/O: the owner feeds it the leader's writes and syncs, follower fetches and the time,
//! and acts on what it returns.

use std::collections::BTreeMap;

pub type BrokerId = i32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsrConfig {
    /// `replica.lag.time.max.ms`: how long an ISR member may go without catching up.
    pub replica_lag_time_max_ms: u64,
    /// `min.insync.replicas`.
    pub min_insync_replicas: usize,
}

impl Default for IsrConfig {
    fn default() -> Self {
        IsrConfig {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
        }
    }
}

/// A change of the ISR the leader asks the controller for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub new_isr: Vec<BrokerId>,
    /// The partition epoch the change applies to; the controller refuses it for any other.
    pub partition_epoch: i32,
    pub leader_epoch: i32,
}

/// What became of an acks=all request waiting for `required_end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckState {
    Waiting,
    Acked,
    /// The high watermark passed it but the ISR is below `min.insync.replicas`.
    NotEnoughReplicasAfterAppend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("replica {0} is not a replica of this partition")]
    NotAReplica(BrokerId),
    #[error("fetch offset {fetch} is past the leader's log end {leader_end}")]
    OffsetOutOfRange { fetch: u64, leader_end: u64 },
}

#[derive(Debug, Clone, Default)]
struct Follower {
    /// The follower's log end, as its last fetch said (it fetches from there).
    log_end: u64,
    /// What of it the follower has made durable.
    durable: u64,
    last_caught_up_ms: u64,
    last_fetch_ms: u64,
    leader_end_at_last_fetch: u64,
    /// Taken out of the ISR by the controller since its last catch-up: it is not proposed
    /// back before a fetch shows it caught up again.
    removed: bool,
}

/// The leader's replica state of one partition for one leader epoch.
#[derive(Debug, Clone)]
pub struct ReplicaSet {
    me: BrokerId,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    pending: Option<IsrChange>,
    /// Every member a change proposed at the current partition epoch adds whose outcome is
    /// not known (unanswered, or answered by a controller that lost its leadership): a copy
    /// of it may still be committed, so they count for the high watermark until the
    /// controller commits the next partition epoch.
    proposed: Vec<BrokerId>,
    followers: BTreeMap<BrokerId, Follower>,
    leader_end: u64,
    leader_durable: u64,
    /// The leader's log end when it took this epoch: a follower below it has not yet
    /// truncated against this leader and may not join the ISR.
    epoch_start: u64,
    high_watermark: u64,
    config: IsrConfig,
}

/// Where a new leader starts from.
#[derive(Debug, Clone)]
pub struct Leadership {
    pub me: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub log_end: u64,
    pub durable: u64,
    pub high_watermark: u64,
}

impl ReplicaSet {
    /// A broker becomes leader at `now_ms`. The ISR members it inherits are taken as caught
    /// up now (as Kafka does): they get `replica_lag_time_max_ms` to show it.
    pub fn new(l: Leadership, config: IsrConfig, now_ms: u64) -> Self {
        let followers = l
            .replicas
            .iter()
            .filter(|&&r| r != l.me)
            .map(|&r| {
                let caught_up = if l.isr.contains(&r) { now_ms } else { 0 };
                (
                    r,
                    Follower {
                        last_caught_up_ms: caught_up,
                        ..Follower::default()
                    },
                )
            })
            .collect();
        ReplicaSet {
            me: l.me,
            leader_epoch: l.leader_epoch,
            partition_epoch: l.partition_epoch,
            replicas: l.replicas,
            isr: l.isr,
            pending: None,
            proposed: Vec::new(),
            followers,
            leader_end: l.log_end,
            leader_durable: l.durable.min(l.log_end),
            epoch_start: l.log_end,
            high_watermark: l.high_watermark.min(l.durable),
            config,
        }
    }

    pub fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn pending(&self) -> Option<&IsrChange> {
        self.pending.as_ref()
    }

    pub fn config(&self) -> IsrConfig {
        self.config
    }

    pub fn set_config(&mut self, config: IsrConfig) {
        self.config = config;
    }

    /// The committed ISR plus the members the pending change, and any change proposed since
    /// whose outcome is not known, add.
    pub fn maximal_isr(&self) -> Vec<BrokerId> {
        let mut all = self.isr.clone();
        let pending = self.pending.iter().flat_map(|c| c.new_isr.iter());
        for r in self.proposed.iter().chain(pending) {
            if !all.contains(r) {
                all.push(*r);
            }
        }
        all
    }

    /// Whether a member of the maximal ISR has made more durable than the leader has: the
    /// high watermark then waits for the leader's own fdatasync, which it should ask for.
    pub fn followers_ahead_of_leader(&self) -> bool {
        self.maximal_isr().iter().any(|r| {
            *r != self.me
                && self
                    .followers
                    .get(r)
                    .is_some_and(|f| f.durable > self.leader_durable)
        }) && self.leader_durable < self.leader_end
    }

    /// Whether an acks=all produce may be appended now.
    pub fn accepts_acks_all(&self) -> bool {
        self.isr.len() >= self.config.min_insync_replicas
    }

    /// The state of an acks=all request whose batch ends (exclusive) at `required_end`.
    pub fn ack_state(&self, required_end: u64) -> AckState {
        if self.high_watermark < required_end {
            AckState::Waiting
        } else if self.isr.len() >= self.config.min_insync_replicas {
            AckState::Acked
        } else {
            AckState::NotEnoughReplicasAfterAppend
        }
    }

    /// The leader wrote up to `log_end`.
    pub fn on_leader_write(&mut self, log_end: u64) {
        self.leader_end = self.leader_end.max(log_end);
    }

    /// The leader's log is durable up to `durable`. Returns whether the high watermark moved.
    pub fn on_leader_durable(&mut self, durable: u64) -> bool {
        self.leader_durable = self.leader_durable.max(durable.min(self.leader_end));
        self.update_high_watermark()
    }

    /// A fetch from `replica` at `fetch_offset` (its log end), reporting `durable` of its log
    /// as synced. Returns whether the high watermark moved.
    pub fn on_fetch(
        &mut self,
        replica: BrokerId,
        fetch_offset: u64,
        durable: u64,
        now_ms: u64,
    ) -> Result<bool, FetchError> {
        if fetch_offset > self.leader_end {
            return Err(FetchError::OffsetOutOfRange {
                fetch: fetch_offset,
                leader_end: self.leader_end,
            });
        }
        let leader_end = self.leader_end;
        let f = self
            .followers
            .get_mut(&replica)
            .ok_or(FetchError::NotAReplica(replica))?;
        if fetch_offset >= leader_end {
            f.last_caught_up_ms = f.last_caught_up_ms.max(now_ms);
            f.removed = false;
        } else if fetch_offset >= f.leader_end_at_last_fetch {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
            f.removed = false;
        }
        f.leader_end_at_last_fetch = leader_end;
        f.last_fetch_ms = now_ms;
        f.log_end = fetch_offset;
        // What a follower has synced cannot be more than it has; a fetch from a lower
        // offset than before (it truncated) takes its durable end down with it.
        f.durable = durable.min(fetch_offset);
        Ok(self.update_high_watermark())
    }

    /// The ISR change to ask the controller for now, if any and none is in flight: the
    /// members to drop (not caught up for the lag time) and the replicas to add.
    pub fn propose(&mut self, now_ms: u64) -> Option<IsrChange> {
        if self.pending.is_some() {
            return None;
        }
        let lag = self.config.replica_lag_time_max_ms;
        let mut new_isr: Vec<BrokerId> = self
            .isr
            .iter()
            .copied()
            .filter(|r| {
                *r == self.me
                    || self.followers.get(r).is_some_and(|f| {
                        f.log_end == self.leader_end
                            || now_ms.saturating_sub(f.last_caught_up_ms) <= lag
                    })
            })
            .collect();
        for r in &self.replicas {
            if new_isr.contains(r) || *r == self.me {
                continue;
            }
            if let Some(f) = self.followers.get(r) {
                let caught_up = now_ms.saturating_sub(f.last_caught_up_ms) <= lag;
                if caught_up
                    && !f.removed
                    && f.durable >= self.high_watermark
                    && f.log_end >= self.epoch_start
                {
                    new_isr.push(*r);
                }
            }
        }
        if !new_isr.contains(&self.me) || same_set(&new_isr, &self.isr) {
            return None;
        }
        let change = IsrChange {
            new_isr,
            partition_epoch: self.partition_epoch,
            leader_epoch: self.leader_epoch,
        };
        self.pending = Some(change.clone());
        Some(change)
    }

    /// The controller committed an ISR (this leader's change or its own, e.g. a fenced
    /// broker removed) at `partition_epoch`. Returns whether the high watermark moved.
    pub fn on_isr_committed(&mut self, isr: Vec<BrokerId>, partition_epoch: i32) -> bool {
        if partition_epoch <= self.partition_epoch {
            return false;
        }
        // A member the controller took out (fenced, or this leader's own shrink) comes back
        // only on a fetch that shows it caught up again, not on what it showed before.
        for r in &self.isr {
            if !isr.contains(r) {
                if let Some(f) = self.followers.get_mut(r) {
                    // Its next fetch starts the evidence afresh (see `on_fetch`).
                    f.removed = true;
                    f.leader_end_at_last_fetch = u64::MAX;
                }
            }
        }
        self.isr = isr;
        self.partition_epoch = partition_epoch;
        self.pending = None;
        self.proposed.clear();
        self.update_high_watermark()
    }

    /// The pending change's outcome is not known (no answer in time, or the controller lost
    /// its leadership): a new one may be proposed, and its members still count for the high
    /// watermark until the next partition epoch (a delayed copy of it may yet commit).
    pub fn on_isr_rejected(&mut self) {
        if let Some(c) = self.pending.take() {
            for r in c.new_isr {
                if !self.proposed.contains(&r) {
                    self.proposed.push(r);
                }
            }
        }
    }

    /// The controller refused the pending change after checking it (stale epochs, an
    /// ineligible replica): it will never commit, and its members stop counting for the high
    /// watermark (those of earlier changes whose outcome is not known still do).
    pub fn on_isr_refused(&mut self) {
        self.pending = None;
        self.update_high_watermark();
    }

    fn update_high_watermark(&mut self) -> bool {
        let mut low = self.leader_durable;
        for r in self.maximal_isr() {
            if r == self.me {
                continue;
            }
            low = low.min(self.followers.get(&r).map_or(0, |f| f.durable));
        }
        if low > self.high_watermark {
            self.high_watermark = low;
            true
        } else {
            false
        }
    }
}

fn same_set(a: &[BrokerId], b: &[BrokerId]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leader(isr: &[BrokerId], min_isr: usize) -> ReplicaSet {
        ReplicaSet::new(
            Leadership {
                me: 1,
                leader_epoch: 3,
                partition_epoch: 7,
                replicas: vec![1, 2, 3],
                isr: isr.to_vec(),
                log_end: 0,
                durable: 0,
                high_watermark: 0,
            },
            IsrConfig {
                replica_lag_time_max_ms: 1000,
                min_insync_replicas: min_isr,
            },
            0,
        )
    }

    #[test]
    fn the_high_watermark_waits_for_every_isr_member_to_sync() {
        let mut p = leader(&[1, 2, 3], 2);
        p.on_leader_write(10);
        p.on_leader_durable(10);
        assert_eq!(p.high_watermark(), 0);
        p.on_fetch(2, 10, 10, 5).unwrap();
        assert_eq!(p.high_watermark(), 0, "replica 3 has nothing yet");
        p.on_fetch(3, 10, 4, 5).unwrap();
        assert_eq!(p.high_watermark(), 4, "3 fetched 10 but synced 4");
        assert_eq!(p.ack_state(10), AckState::Waiting);
        p.on_fetch(3, 10, 10, 6).unwrap();
        assert_eq!(p.high_watermark(), 10);
        assert_eq!(p.ack_state(10), AckState::Acked);
    }

    #[test]
    fn a_lagging_member_is_dropped_and_the_high_watermark_moves_on() {
        let mut p = leader(&[1, 2, 3], 2);
        p.on_leader_write(10);
        p.on_leader_durable(10);
        p.on_fetch(2, 10, 10, 100).unwrap();
        assert_eq!(p.propose(900), None, "3 is within the lag time");
        let change = p.propose(1001).expect("3 is out of sync");
        assert_eq!(change.new_isr, vec![1, 2]);
        assert_eq!(change.partition_epoch, 7);
        assert_eq!(p.propose(1002), None, "one change in flight");
        assert_eq!(p.high_watermark(), 0, "3 still counts until committed");
        assert!(p.on_isr_committed(vec![1, 2], 8));
        assert_eq!(p.high_watermark(), 10);
        assert!(p.accepts_acks_all());
    }

    #[test]
    fn a_caught_up_replica_rejoins_only_past_the_epoch_start_and_the_high_watermark() {
        let mut p = ReplicaSet::new(
            Leadership {
                me: 1,
                leader_epoch: 4,
                partition_epoch: 2,
                replicas: vec![1, 2],
                isr: vec![1],
                log_end: 20,
                durable: 20,
                high_watermark: 15,
            },
            IsrConfig::default(),
            0,
        );
        p.on_fetch(2, 12, 12, 10).unwrap();
        assert_eq!(
            p.propose(10),
            None,
            "below the epoch start and high watermark"
        );
        p.on_fetch(2, 20, 20, 11).unwrap();
        let change = p.propose(11).expect("caught up");
        assert_eq!(change.new_isr, vec![1, 2]);
    }

    #[test]
    fn a_refused_expansion_still_counts_until_the_next_partition_epoch() {
        let mut p = ReplicaSet::new(
            Leadership {
                me: 1,
                leader_epoch: 1,
                partition_epoch: 1,
                replicas: vec![1, 2],
                isr: vec![1],
                log_end: 0,
                durable: 0,
                high_watermark: 0,
            },
            IsrConfig::default(),
            0,
        );
        p.on_fetch(2, 0, 0, 1).unwrap();
        assert_eq!(p.propose(1).map(|c| c.new_isr), Some(vec![1, 2]));
        p.on_isr_rejected();
        p.on_leader_write(5);
        p.on_leader_durable(5);
        // A delayed copy of the refused request may still commit 2 into the ISR.
        assert_eq!(p.high_watermark(), 0);
        p.on_isr_committed(vec![1], 2);
        assert_eq!(p.high_watermark(), 5);
    }

    #[test]
    fn a_refused_expansion_counts_no_more_and_a_removed_member_needs_a_new_fetch() {
        let mut p = ReplicaSet::new(
            Leadership {
                me: 1,
                leader_epoch: 1,
                partition_epoch: 1,
                replicas: vec![1, 2, 3],
                isr: vec![1, 2, 3],
                log_end: 0,
                durable: 0,
                high_watermark: 0,
            },
            IsrConfig::default(),
            0,
        );
        p.on_fetch(2, 0, 0, 1).unwrap();
        p.on_fetch(3, 0, 0, 1).unwrap();
        // The controller fences 3: it leaves the ISR. Its old fetch does not bring it back.
        assert!(!p.on_isr_committed(vec![1, 2], 2));
        assert_eq!(p.propose(2), None);
        p.on_leader_write(5);
        p.on_leader_durable(5);
        p.on_fetch(2, 5, 5, 3).unwrap();
        assert_eq!(p.high_watermark(), 5);
        // 3 fetches at the end again: proposed, refused for good (fenced), and the high
        // watermark does not wait for it.
        p.on_fetch(3, 5, 5, 4).unwrap();
        assert_eq!(p.propose(4).map(|c| c.new_isr), Some(vec![1, 2, 3]));
        p.on_leader_write(9);
        p.on_leader_durable(9);
        p.on_fetch(2, 9, 9, 5).unwrap();
        assert_eq!(p.high_watermark(), 5, "the pending change's member counts");
        p.on_isr_refused();
        assert_eq!(p.high_watermark(), 9);
    }

    #[test]
    fn an_ack_after_the_isr_shrank_below_the_minimum_is_refused() {
        let mut p = leader(&[1, 2], 2);
        p.on_leader_write(5);
        p.on_leader_durable(5);
        assert!(p.accepts_acks_all());
        p.on_isr_committed(vec![1], 8);
        assert_eq!(p.high_watermark(), 5);
        assert_eq!(p.ack_state(5), AckState::NotEnoughReplicasAfterAppend);
        assert!(!p.accepts_acks_all());
    }

    #[test]
    fn bad_fetches_are_errors() {
        let mut p = leader(&[1, 2, 3], 1);
        p.on_leader_write(3);
        assert_eq!(
            p.on_fetch(2, 4, 4, 0),
            Err(FetchError::OffsetOutOfRange {
                fetch: 4,
                leader_end: 3
            })
        );
        assert_eq!(p.on_fetch(9, 0, 0, 0), Err(FetchError::NotAReplica(9)));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64),
        Sync(u64),
        Fetch {
            replica: BrokerId,
            back: u64,
            unsynced: u64,
        },
        Time(u64),
        Propose,
        Commit,
        Reject,
        Refuse,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1u64..20).prop_map(Op::Write),
            (0u64..20).prop_map(Op::Sync),
            (2..=3, 0u64..10, 0u64..10).prop_map(|(replica, back, unsynced)| Op::Fetch {
                replica,
                back,
                unsynced
            }),
            (0u64..800).prop_map(Op::Time),
            Just(Op::Propose),
            Just(Op::Commit),
            Just(Op::Reject),
            Just(Op::Refuse),
        ]
    }

    proptest! {
        /// Whatever the controller commits, every member of the committed ISR durably holds
        /// everything below the high watermark (so any of them can be elected without losing
        /// an acked record); the high watermark never goes back; an ack needs the minimum ISR.
        #[test]
        fn every_isr_member_holds_the_high_watermark(ops in proptest::collection::vec(op(), 1..120)) {
            let mut p = leader(&[1, 2, 3], 2);
            let mut now = 0u64;
            let mut end = 0u64;
            let mut durable = 0u64;
            let mut follower_end = BTreeMap::from([(2, 0u64), (3, 0u64)]);
            let mut follower_durable = BTreeMap::from([(2, 0u64), (3, 0u64)]);
            let mut epoch = 7;
            for op in ops {
                let hw = p.high_watermark();
                match op {
                    Op::Write(n) => { end += n; p.on_leader_write(end); }
                    Op::Sync(n) => { durable = (durable + n).min(end); p.on_leader_durable(durable); }
                    Op::Fetch { replica, back, unsynced } => {
                        // A follower moves forward through the leader's log, never back
                        // within one leader epoch.
                        let target = end.saturating_sub(back).max(follower_end[&replica]);
                        let synced = target.saturating_sub(unsynced).max(follower_durable[&replica]);
                        follower_end.insert(replica, target);
                        follower_durable.insert(replica, synced);
                        p.on_fetch(replica, target, synced, now).unwrap();
                    }
                    Op::Time(ms) => now += ms,
                    Op::Propose => { p.propose(now); }
                    Op::Commit => {
                        if let Some(change) = p.pending().cloned() {
                            epoch += 1;
                            p.on_isr_committed(change.new_isr, epoch);
                        }
                    }
                    Op::Reject => p.on_isr_rejected(),
                    // Refused after checking: that change never commits.
                    Op::Refuse => p.on_isr_refused(),
                }
                let now_hw = p.high_watermark();
                prop_assert!(now_hw >= hw, "the high watermark went back");
                prop_assert!(now_hw <= durable, "past the leader's durable end");
                for r in p.maximal_isr() {
                    if r != 1 {
                        prop_assert!(follower_durable[&r] >= now_hw,
                            "ISR member {} holds {} < {}", r, follower_durable[&r], now_hw);
                    }
                }
                if p.ack_state(now_hw) == AckState::Acked {
                    prop_assert!(p.isr().len() >= 2);
                }
            }
        }
    }
}
