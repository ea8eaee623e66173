//! Where a returning follower's log diverges from its leader's (KIP-101, KIP-279).
//!
//! Two replicas that hold a record of the same leader epoch at the same offset hold the same
//! record: one leader per epoch wrote it. So the logs agree up to the first offset where their
//! epochs differ, and a follower finds that offset by asking the leader, for the follower's
//! latest epoch, "what is the largest epoch you have at or below it, and where does it end?"
//! (OffsetsForLeaderEpoch). Then:
//! - the follower has that epoch too: the logs agree up to the smaller of the two ends of that
//!   epoch; truncate there and follow;
//! - it does not: every record after the end of the follower's largest epoch below it is of an
//!   epoch the leader never had; truncate there and ask again for that smaller epoch;
//! - it has no epoch at or below it, or the leader has none: nothing is known to be shared;
//!   truncate the whole log and fetch from the leader's log start.
//!
//! Sans-I/O: [`Divergence`] is driven by the leader's answers and says what to truncate and
//! what to ask next. The search ends after at most one question per epoch of the follower.

/// One leader's answer for an epoch (the OffsetsForLeaderEpoch response): the largest epoch
/// at or below the one asked that the leader's log has, and the offset where that epoch ends.
/// `None` when the leader has no such epoch.
pub type EpochEnd = Option<(i32, u64)>;

/// A log's epoch history, as the engine's leader-epoch index answers it.
pub trait EpochHistory {
    /// The newest epoch in the log, if any.
    fn latest_epoch(&self) -> Option<i32>;
    /// The largest epoch at or below `epoch`, and the offset where it ends in this log.
    fn end_offset_for(&self, epoch: i32) -> EpochEnd;
}

/// What a follower does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Send OffsetsForLeaderEpoch for this epoch and feed the answer to
    /// [`Divergence::on_answer`] (after doing `truncate_to`, if any).
    Ask {
        epoch: i32,
        truncate_to: Option<u64>,
    },
    /// Truncate the log's tail from this offset (no-op at or past its end), then fetch from
    /// there: the search is over.
    TruncateTo(u64),
    /// Nothing is shared: empty the log and fetch from the leader's log start.
    TruncateFully,
}

/// The search for the divergence point of one partition on one follower.
#[derive(Debug, Clone)]
pub struct Divergence {
    asked: i32,
}

impl Divergence {
    /// Starts the search for a follower log; an empty log (no epochs) has nothing to
    /// truncate and follows from the leader's log start.
    pub fn start(follower: &impl EpochHistory) -> (Option<Self>, Step) {
        match follower.latest_epoch() {
            Some(epoch) => (
                Some(Divergence { asked: epoch }),
                Step::Ask {
                    epoch,
                    truncate_to: None,
                },
            ),
            None => (None, Step::TruncateFully),
        }
    }

    /// The epoch of the pending question.
    pub fn asked(&self) -> i32 {
        self.asked
    }

    /// The leader's answer to the pending question; the follower's log must be the one the
    /// search started with, truncated as earlier steps said.
    pub fn on_answer(&mut self, follower: &impl EpochHistory, answer: EpochEnd) -> Step {
        let Some((leader_epoch, leader_end)) = answer else {
            return Step::TruncateFully;
        };
        if leader_epoch > self.asked {
            // A leader must answer at or below what was asked; one that does not is not
            // trusted with a partial truncation.
            return Step::TruncateFully;
        }
        match follower.end_offset_for(leader_epoch) {
            Some((epoch, end)) if epoch == leader_epoch => Step::TruncateTo(end.min(leader_end)),
            Some((epoch, end)) => {
                // Everything after `end` is of epochs in (epoch, asked]: none of them is the
                // leader's (its largest at or below `asked` is `leader_epoch`, which this log
                // lacks).
                debug_assert!(epoch < leader_epoch);
                self.asked = epoch;
                Step::Ask {
                    epoch,
                    truncate_to: Some(end),
                }
            }
            None => Step::TruncateFully,
        }
    }
}

/// A log's epochs as a list of `(epoch, start offset)` and its end: what tests and the
/// simulation use, and the shape of the engine's index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochList {
    pub entries: Vec<(i32, u64)>,
    pub log_end: u64,
}

impl EpochList {
    /// The epoch list of a log given as the epoch of each offset from 0.
    pub fn of_offsets(epochs: &[i32]) -> Self {
        let mut entries: Vec<(i32, u64)> = Vec::new();
        for (offset, &epoch) in epochs.iter().enumerate() {
            if entries.last().is_none_or(|&(e, _)| e != epoch) {
                entries.push((epoch, offset as u64));
            }
        }
        EpochList {
            entries,
            log_end: epochs.len() as u64,
        }
    }

    /// Cuts the log's tail from `offset`.
    pub fn truncate(&mut self, offset: u64) {
        if offset < self.log_end {
            self.log_end = offset;
            self.entries.retain(|&(_, start)| start < offset);
        }
    }
}

impl EpochHistory for EpochList {
    fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    fn end_offset_for(&self, epoch: i32) -> EpochEnd {
        let i = self.entries.partition_point(|&(e, _)| e <= epoch);
        let (found, _) = *self.entries.get(i.checked_sub(1)?)?;
        let end = self.entries.get(i).map_or(self.log_end, |&(_, s)| s);
        Some((found, end))
    }
}

/// Runs the whole search of `follower` against `leader` in memory and returns the offset the
/// follower keeps up to (0 for a full truncation), applying each truncation to `follower`.
pub fn resolve(follower: &mut EpochList, leader: &impl EpochHistory) -> u64 {
    let (search, mut step) = Divergence::start(follower);
    let Some(mut search) = search else {
        return 0;
    };
    loop {
        match step {
            Step::Ask { epoch, truncate_to } => {
                if let Some(offset) = truncate_to {
                    follower.truncate(offset);
                }
                step = search.on_answer(follower, leader.end_offset_for(epoch));
            }
            Step::TruncateTo(offset) => {
                follower.truncate(offset);
                return follower.log_end;
            }
            Step::TruncateFully => {
                follower.truncate(0);
                return 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn common_prefix(a: &[i32], b: &[i32]) -> u64 {
        a.iter().zip(b).take_while(|(x, y)| x == y).count() as u64
    }

    #[test]
    fn a_follower_of_the_same_history_keeps_everything() {
        let leader = EpochList::of_offsets(&[1, 1, 2, 2, 3]);
        let mut follower = EpochList::of_offsets(&[1, 1, 2]);
        assert_eq!(resolve(&mut follower, &leader), 3);
    }

    #[test]
    fn an_old_leaders_unreplicated_tail_is_cut() {
        // The follower led epoch 2 and wrote offsets 2..5 that only it has; the new leader
        // (epoch 3) took over from offset 2.
        let leader = EpochList::of_offsets(&[1, 1, 3, 3, 3, 3]);
        let mut follower = EpochList::of_offsets(&[1, 1, 2, 2, 2]);
        assert_eq!(resolve(&mut follower, &leader), 2);
        assert_eq!(follower.entries, vec![(1, 0)]);
    }

    #[test]
    fn a_longer_tail_of_a_shared_epoch_is_cut_at_the_leaders_end() {
        let leader = EpochList::of_offsets(&[1, 1, 1, 4]);
        let mut follower = EpochList::of_offsets(&[1, 1, 1, 1, 1]);
        assert_eq!(resolve(&mut follower, &leader), 3);
    }

    #[test]
    fn nothing_shared_is_a_full_truncation() {
        let leader = EpochList::of_offsets(&[5, 5]);
        let mut follower = EpochList::of_offsets(&[2, 3]);
        assert_eq!(resolve(&mut follower, &leader), 0);
    }

    #[test]
    fn an_answer_above_the_question_is_not_trusted() {
        let follower = EpochList::of_offsets(&[1, 2]);
        let (search, _) = Divergence::start(&follower);
        let mut search = search.expect("an epoch");
        assert_eq!(
            search.on_answer(&follower, Some((7, 1))),
            Step::TruncateFully
        );
    }

    /// Histories as they arise: the leader of each epoch starts from a prefix of an earlier
    /// leader's log and appends records of its own epoch. Same epoch at the same offset means
    /// the same record, so the right truncation point is the longest common prefix of epochs.
    fn histories() -> impl Strategy<Value = (Vec<i32>, Vec<i32>)> {
        (
            2usize..8,
            proptest::collection::vec((any::<usize>(), any::<usize>(), 0usize..6), 8),
            any::<usize>(),
            any::<usize>(),
        )
            .prop_map(|(epochs, steps, follower_pick, follower_cut)| {
                let mut logs: Vec<Vec<i32>> = vec![Vec::new()];
                for (e, &(parent, cut, appended)) in steps.iter().take(epochs).enumerate() {
                    let parent = &logs[parent % logs.len()];
                    let keep = cut % (parent.len() + 1);
                    let mut log = parent[..keep].to_vec();
                    log.extend(std::iter::repeat_n(e as i32 + 1, appended));
                    logs.push(log);
                }
                let leader = logs.last().cloned().unwrap_or_default();
                let earlier = &logs[follower_pick % (logs.len() - 1)];
                let follower = earlier[..follower_cut % (earlier.len() + 1)].to_vec();
                (leader, follower)
            })
    }

    proptest! {
        #[test]
        fn the_search_finds_the_longest_common_prefix((leader, follower) in histories()) {
            let leader_list = EpochList::of_offsets(&leader);
            let mut follower_list = EpochList::of_offsets(&follower);
            let kept = resolve(&mut follower_list, &leader_list);
            let shared = common_prefix(&leader, &follower);
            // A full truncation is allowed only when nothing is known shared by epoch (the
            // follower's first epoch is not the leader's); otherwise exactly the prefix.
            prop_assert_eq!(kept, shared);
            prop_assert_eq!(follower_list, EpochList::of_offsets(&follower[..shared as usize]));
        }
    }
}
