//! The quorum's in-memory view of its log for raft-rs: the entries it holds, its hard state,
//! and its latest snapshot with the data (the encoded cluster image) raft-rs sends a peer
//! that is too far behind. raft-rs's own `MemStorage` cannot carry snapshot data and takes
//! snapshots only at the commit index; this one keeps the snapshot the owner took at an
//! applied index, and may keep entries from before it (a follower a little behind is then
//! sent entries, not the whole image).
//!
//! It is the view, not the durable copy: the owner makes each change durable through
//! [`QuorumStore`](super::store::QuorumStore) as the quorum's [`Output`](super::Output)
//! says, and rebuilds this view from what is durable at start.

use std::cell::RefCell;
use std::rc::Rc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{Error, GetEntriesContext, RaftState, StorageError};

use super::SnapshotData;

#[derive(Default)]
struct Core {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot: Option<SnapshotData>,
    /// The entry just before the first held (or the last, if none is): raft-rs matches on
    /// its term. (0, 0) for a log that starts at 1.
    prev: (u64, u64),
    /// Contiguous from `prev.0 + 1`; they may reach below the snapshot's index.
    entries: Vec<Entry>,
}

impl Core {
    fn first_index(&self) -> u64 {
        self.prev.0 + 1
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.prev.0, |e| e.index)
    }
}

#[derive(Clone, Default)]
pub struct MetaStorage {
    core: Rc<RefCell<Core>>,
}

impl MetaStorage {
    pub fn new(conf_state: ConfState) -> Self {
        let s = MetaStorage::default();
        s.core.borrow_mut().conf_state = conf_state;
        s
    }

    pub fn set_hard_state(&self, hs: HardState) {
        self.core.borrow_mut().hard_state = hs;
    }

    pub fn set_commit(&self, commit: u64) {
        self.core.borrow_mut().hard_state.commit = commit;
    }

    pub fn hard_state(&self) -> HardState {
        self.core.borrow().hard_state.clone()
    }

    /// Appends entries that raft-rs handed out: an entry at an index already held replaces
    /// it and everything after it. Entries that do not follow what is held are refused.
    pub fn append(&self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let mut core = self.core.borrow_mut();
        let (lo, hi) = (core.first_index(), core.last_index());
        if first.index < lo || first.index > hi + 1 {
            return Err(format!(
                "entries from {} do not follow the log's {lo}..={hi}",
                first.index
            ));
        }
        let keep = (first.index - lo) as usize;
        core.entries.truncate(keep);
        core.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Installs a snapshot: it replaces the log (a snapshot from the leader) or, `keep_from`
    /// given, keeps the entries from that index on (the node's own snapshot at an index it
    /// applied, which it holds the entries up to).
    pub fn set_snapshot(&self, snap: SnapshotData, keep_from: Option<u64>) {
        let mut core = self.core.borrow_mut();
        match keep_from {
            Some(from) if core.last_index() >= snap.index => {
                let drop = from.saturating_sub(core.first_index());
                let drop = drop.min(core.entries.len() as u64) as usize;
                if drop > 0 {
                    let last = &core.entries[drop - 1];
                    core.prev = (last.index, last.term);
                    core.entries.drain(..drop);
                }
            }
            _ => {
                core.entries.clear();
                core.prev = (snap.index, snap.term);
                let hs = &mut core.hard_state;
                hs.term = hs.term.max(snap.term);
                hs.commit = hs.commit.max(snap.index);
            }
        }
        core.snapshot = Some(snap);
    }

    pub fn snapshot_data(&self) -> Option<SnapshotData> {
        self.core.borrow().snapshot.clone()
    }

    pub fn first_index(&self) -> u64 {
        self.core.borrow().first_index()
    }

    fn to_raft_snapshot(&self, snap: &SnapshotData) -> Snapshot {
        let mut s = Snapshot {
            data: snap.data.clone().into(),
            ..Default::default()
        };
        let meta = s.mut_metadata();
        meta.index = snap.index;
        meta.term = snap.term;
        meta.set_conf_state(self.core.borrow().conf_state.clone());
        s
    }
}

impl raft::Storage for MetaStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let core = self.core.borrow();
        Ok(RaftState::new(
            core.hard_state.clone(),
            core.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let core = self.core.borrow();
        let (lo, hi) = (core.first_index(), core.last_index());
        if low < lo {
            return Err(Error::Store(StorageError::Compacted));
        }
        if high > hi + 1 || low > high {
            return Err(Error::Store(StorageError::Unavailable));
        }
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut out = Vec::new();
        let mut size = 0u64;
        for e in &core.entries[(low - lo) as usize..(high - lo) as usize] {
            let n = protobuf::Message::compute_size(e) as u64;
            if !out.is_empty() && size + n > max {
                break;
            }
            size += n;
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let core = self.core.borrow();
        if let Some(s) = core.snapshot.as_ref().filter(|s| s.index == idx) {
            return Ok(s.term);
        }
        if idx == core.prev.0 {
            return Ok(core.prev.1);
        }
        let (lo, hi) = (core.first_index(), core.last_index());
        if idx < lo {
            return Err(Error::Store(StorageError::Compacted));
        }
        if idx > hi {
            return Err(Error::Store(StorageError::Unavailable));
        }
        Ok(core.entries[(idx - lo) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.core.borrow().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.core.borrow().last_index())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        match self.snapshot_data() {
            Some(s) if s.index >= request_index => Ok(self.to_raft_snapshot(&s)),
            _ => Err(Error::Store(StorageError::SnapshotTemporarilyUnavailable)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Default::default()
        }
    }

    #[test]
    fn appends_replace_a_tail_and_snapshots_compact_or_replace_the_log() {
        let s = MetaStorage::new(ConfState::from((vec![1, 2, 3], vec![])));
        assert_eq!((s.first_index(), s.last_index().unwrap()), (1, 0));
        assert_eq!(s.term(0).unwrap(), 0);
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 2)]).unwrap();
        s.append(&[entry(3, 3), entry(4, 3)]).unwrap();
        assert_eq!(s.term(3).unwrap(), 3);
        assert!(s.append(&[entry(9, 3)]).is_err(), "a gap is refused");
        // The node's own snapshot at 3, keeping the entries from 2.
        let snap = |index, term| SnapshotData {
            index,
            term,
            data: vec![index as u8],
        };
        s.set_snapshot(snap(3, 3), Some(2));
        assert_eq!(s.first_index(), 2);
        assert_eq!(
            s.term(1).unwrap(),
            1,
            "the term before the first entry is kept"
        );
        assert_eq!(
            s.entries(2, 5, None, GetEntriesContext::empty(false))
                .unwrap()
                .len(),
            3
        );
        assert!(matches!(
            s.entries(1, 5, None, GetEntriesContext::empty(false)),
            Err(Error::Store(StorageError::Compacted))
        ));
        let raft_snap = s.snapshot(0, 2).unwrap();
        assert_eq!(
            (raft_snap.get_metadata().index, raft_snap.data.to_vec()),
            (3, vec![3])
        );
        assert!(s.snapshot(4, 2).is_err());
        // A leader's snapshot past the log replaces it.
        s.set_snapshot(snap(10, 5), None);
        assert_eq!((s.first_index(), s.last_index().unwrap()), (11, 10));
        assert_eq!(s.term(10).unwrap(), 5);
        assert_eq!(s.hard_state().commit, 10);
        s.append(&[entry(11, 5)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 11);
    }
}
