//! A follower's side of one partition: learn a leader and epoch, find where the local log
//! parts from the leader's ([`Divergence`]), cut the divergent tail, then fetch from the log
//! end, again and again, carrying the leader epoch it follows so that a leader of another
//! epoch refuses it.
//!
//! Sans-I/O: the owner tells it the leadership (from the metadata image), the leader's
//! answers and the local log's state, and does the [`Action`]s it returns.

use crate::divergence::{Divergence, EpochEnd, EpochHistory, Step};
use crate::isr::BrokerId;

/// What the follower does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Ask the leader where `epoch` ends (OffsetsForLeaderEpoch, with the leader epoch
    /// followed), after cutting the log's tail from `truncate_to` if set.
    AskEpochEnd {
        epoch: i32,
        truncate_to: Option<u64>,
    },
    /// Cut the log's tail from this offset, then fetch from the log end.
    Truncate(u64),
    /// Empty the log (it shares nothing with the leader's), then fetch from its start; a
    /// leader whose log starts later answers that with [`Action::StartAt`].
    TruncateFully,
    /// The leader's log starts at this offset, past this log's end (retention or DeleteRecords
    /// moved it while this replica was away): empty the log and start it there (Kafka's
    /// `truncateFullyAndStartAt`), then fetch.
    StartAt(u64),
    /// Fetch from the log end.
    Fetch,
    /// Nothing until the leadership changes (this broker is not a follower of anyone).
    Idle,
}

/// How a leader refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The leader is in a newer epoch (or no longer leads): wait for the metadata.
    FencedLeaderEpoch,
    /// The leader has not learned the epoch yet: ask again shortly.
    UnknownLeaderEpoch,
    /// Not (yet) the leader in the epoch named: ask again shortly.
    NotLeader,
    /// The fetch offset is outside the leader's log (past its end; below its start is
    /// [`Follower::on_out_of_range`]).
    OffsetOutOfRange,
}

impl Refusal {
    /// Kafka's rule for a request that names the leader epoch it expects (Fetch,
    /// OffsetsForLeaderEpoch): an older epoch is fenced, a newer one not known yet.
    pub fn check_epoch(leader_epoch: i32, requested: i32) -> Result<(), Refusal> {
        match requested.cmp(&leader_epoch) {
            std::cmp::Ordering::Less => Err(Refusal::FencedLeaderEpoch),
            std::cmp::Ordering::Greater => Err(Refusal::UnknownLeaderEpoch),
            std::cmp::Ordering::Equal => Ok(()),
        }
    }

    /// The Kafka error code of this refusal.
    pub fn code(self) -> i16 {
        use crate::pipeline::wire::code;
        match self {
            Refusal::FencedLeaderEpoch => code::FENCED_LEADER_EPOCH,
            Refusal::UnknownLeaderEpoch => code::UNKNOWN_LEADER_EPOCH,
            Refusal::NotLeader => code::NOT_LEADER_OR_FOLLOWER,
            Refusal::OffsetOutOfRange => code::OFFSET_OUT_OF_RANGE,
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Idle,
    Searching(Divergence),
    Fetching,
}

#[derive(Debug, Clone)]
pub struct Follower {
    me: BrokerId,
    leader: Option<(BrokerId, i32)>,
    state: State,
}

impl Follower {
    pub fn new(me: BrokerId) -> Self {
        Follower {
            me,
            leader: None,
            state: State::Idle,
        }
    }

    /// The leader and epoch followed, if any.
    pub fn leader(&self) -> Option<(BrokerId, i32)> {
        self.leader
    }

    pub fn is_fetching(&self) -> bool {
        matches!(self.state, State::Fetching)
    }

    /// The metadata says `leader` leads in `epoch` (or there is no leader, or it is this
    /// broker). A change of leader or epoch starts a new divergence search; `None` when
    /// nothing changes (the same leadership again, or an older epoch than the one followed).
    pub fn on_leadership(
        &mut self,
        leader: Option<BrokerId>,
        epoch: i32,
        log: &impl EpochHistory,
    ) -> Option<Action> {
        let new = leader.filter(|l| *l != self.me).map(|l| (l, epoch));
        if new == self.leader {
            return None;
        }
        if let (Some((_, old)), Some((_, now))) = (self.leader, new) {
            if now < old {
                return None;
            }
        }
        self.leader = new;
        if self.leader.is_none() {
            self.state = State::Idle;
            return Some(Action::Idle);
        }
        let (search, step) = Divergence::start(log);
        match search {
            Some(s) => self.state = State::Searching(s),
            None => self.state = State::Fetching,
        }
        Some(self.step(step))
    }

    /// The leader's answer for `epoch_asked`; `log` is the local log after the truncations
    /// already done. `None` for an answer to no pending question (late or duplicated): it
    /// must not undo what the first answer started.
    pub fn on_epoch_end(
        &mut self,
        epoch_asked: i32,
        answer: EpochEnd,
        log: &impl EpochHistory,
    ) -> Option<Action> {
        let State::Searching(search) = &mut self.state else {
            return None;
        };
        if search.asked() != epoch_asked {
            return None;
        }
        let step = search.on_answer(log, answer);
        Some(self.step(step))
    }

    /// The leader refused a request; `None`: send the same again after a back-off.
    pub fn on_refusal(&mut self, refusal: Refusal) -> Option<Action> {
        match refusal {
            Refusal::FencedLeaderEpoch => {
                // The leader is past the epoch followed: stop until the metadata names the
                // next leadership, which then starts a new search.
                self.leader = None;
                self.state = State::Idle;
                Some(Action::Idle)
            }
            // The leader has not learned of its leadership yet.
            Refusal::UnknownLeaderEpoch | Refusal::NotLeader => None,
            Refusal::OffsetOutOfRange => {
                self.state = State::Fetching;
                Some(Action::TruncateFully)
            }
        }
    }

    /// The leader refused a fetch at `fetch_offset` as out of range, its log starting at
    /// `leader_log_start`: below that start, the log starts again there; otherwise the fetch
    /// was past the leader's end, a refusal as [`Refusal::OffsetOutOfRange`].
    pub fn on_out_of_range(&mut self, fetch_offset: u64, leader_log_start: u64) -> Option<Action> {
        if fetch_offset < leader_log_start {
            self.state = State::Fetching;
            Some(Action::StartAt(leader_log_start))
        } else {
            self.on_refusal(Refusal::OffsetOutOfRange)
        }
    }

    /// What to do again after a pause (a retry, a duplicate leadership notice).
    pub fn resume(&self) -> Action {
        match (&self.state, self.leader) {
            (_, None) | (State::Idle, _) => Action::Idle,
            (State::Searching(s), _) => Action::AskEpochEnd {
                epoch: s.asked(),
                truncate_to: None,
            },
            (State::Fetching, _) => Action::Fetch,
        }
    }

    fn step(&mut self, step: Step) -> Action {
        match step {
            Step::Ask { epoch, truncate_to } => Action::AskEpochEnd { epoch, truncate_to },
            Step::TruncateTo(offset) => {
                self.state = State::Fetching;
                Action::Truncate(offset)
            }
            Step::TruncateFully => {
                self.state = State::Fetching;
                Action::TruncateFully
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::divergence::EpochList;

    #[test]
    fn a_new_leader_starts_a_search_then_fetching() {
        let mut log = EpochList::of_offsets(&[1, 1, 2, 2, 2]);
        let leader_log = EpochList::of_offsets(&[1, 1, 3, 3]);
        let mut f = Follower::new(2);
        let a = f.on_leadership(Some(1), 3, &log);
        assert_eq!(
            a,
            Some(Action::AskEpochEnd {
                epoch: 2,
                truncate_to: None
            })
        );
        // The leader's largest epoch at or below 2 is 1, which ends at 2 on both sides.
        let a = f.on_epoch_end(2, leader_log.end_offset_for(2), &log);
        assert_eq!(a, Some(Action::Truncate(2)));
        // The same answer again (a duplicate) must not replace the truncation.
        assert_eq!(f.on_epoch_end(2, leader_log.end_offset_for(2), &log), None);
        log.truncate(2);
        assert!(f.is_fetching());
        assert_eq!(f.resume(), Action::Fetch);
    }

    #[test]
    fn stale_answers_and_stale_leaders_are_ignored() {
        let log = EpochList::of_offsets(&[4, 4]);
        let mut f = Follower::new(2);
        f.on_leadership(Some(1), 5, &log);
        assert_eq!(f.on_epoch_end(3, Some((3, 0)), &log), None);
        assert_eq!(f.on_leadership(Some(3), 4, &log), None);
        assert_eq!(f.on_leadership(Some(1), 5, &log), None);
        assert_eq!(f.leader(), Some((1, 5)));
        assert_eq!(
            f.resume(),
            Action::AskEpochEnd {
                epoch: 4,
                truncate_to: None
            }
        );
    }

    #[test]
    fn becoming_leader_or_being_fenced_stops_fetching() {
        let log = EpochList::default();
        let mut f = Follower::new(2);
        assert_eq!(
            f.on_leadership(Some(1), 1, &log),
            Some(Action::TruncateFully)
        );
        assert_eq!(f.on_refusal(Refusal::NotLeader), None);
        assert_eq!(f.on_refusal(Refusal::FencedLeaderEpoch), Some(Action::Idle));
        assert_eq!(
            f.on_leadership(Some(1), 1, &log),
            Some(Action::TruncateFully)
        );
        assert_eq!(f.on_leadership(Some(2), 2, &log), Some(Action::Idle));
        assert_eq!(f.leader(), None);
    }

    #[test]
    fn a_fetch_below_the_leaders_log_start_starts_the_log_there() {
        let log = EpochList::of_offsets(&[1, 1, 1]);
        let mut f = Follower::new(2);
        f.on_leadership(Some(1), 1, &log);
        assert_eq!(f.on_out_of_range(3, 10), Some(Action::StartAt(10)));
        assert!(f.is_fetching());
        // Past the leader's end (its start below the fetch): the whole log goes.
        assert_eq!(f.on_out_of_range(12, 10), Some(Action::TruncateFully));
    }

    #[test]
    fn the_epoch_rule() {
        assert_eq!(Refusal::check_epoch(5, 5), Ok(()));
        assert_eq!(Refusal::check_epoch(5, 4), Err(Refusal::FencedLeaderEpoch));
        assert_eq!(Refusal::check_epoch(5, 6), Err(Refusal::UnknownLeaderEpoch));
    }
}
