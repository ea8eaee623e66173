//! The metadata quorum: one node of a Raft group on raft-rs (`RawNode`), wrapped so that the
//! owner drives it with ticks, peer messages and proposals and gets back one [`Output`] at a
//! time saying what to send, what to make durable first, and what is committed.
//!
//! The contract, raft-rs's own made explicit: `Output::send` may go at once; everything else
//! waits until `Output::persist` is durable (fdatasynced): then `send_after_persist` goes and
//! `committed` is applied, in order. Nothing else is called on the node in between. At start,
//! the node is rebuilt from what was made durable ([`Durable`]) and hands back every committed
//! entry again, so the image is rebuilt by replaying the log.
//!
//! Elections are randomised as Raft needs, from a seeded generator of Spate's own (raft-rs
//! draws from the thread's generator; the node overrides each draw at once), so a simulation
//! with the same seed runs the same way.

mod log_bridge;
pub mod storage;
pub mod store;
pub mod wire;

use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};

use storage::MetaStorage;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    pub node_id: u64,
    pub voters: Vec<u64>,
    /// A follower that hears no leader for between this many and twice this many ticks
    /// campaigns.
    pub election_ticks: usize,
    /// A leader sends heartbeats every this many ticks.
    pub heartbeat_ticks: usize,
    pub seed: u64,
}

impl QuorumConfig {
    pub fn new(node_id: u64, voters: Vec<u64>, seed: u64) -> Self {
        QuorumConfig {
            node_id,
            voters,
            election_ticks: 10,
            heartbeat_ticks: 2,
            seed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    #[error("invalid quorum configuration: {0}")]
    Config(String),
    #[error("not the leader of the metadata quorum (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("raft: {0}")]
    Raft(String),
}

/// A snapshot of the state machine (the encoded cluster image) as of log `index`, whose
/// entry had `term`: it stands for every entry up to `index`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotData {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

/// What a node has made durable: its hard state (term, vote, commit), its latest snapshot,
/// and its log (entries after the snapshot; some before it may remain and are ignored).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Durable {
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotData>,
    pub entries: Vec<Entry>,
}

/// What must be durable before the rest of an [`Output`] is acted on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Persist {
    /// A snapshot from the leader: it replaces the whole log, before `entries` follow it.
    /// The owner's state machine is replaced by its data.
    pub snapshot: Option<SnapshotData>,
    /// Appended to the log; an entry at an index the log already has replaces it and every
    /// entry after it.
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

impl Persist {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// A snapshot the node took of its own applied state ([`Quorum::compact`]): the owner saves
/// it, then may drop the log's entries below `keep_from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compaction {
    pub snapshot: SnapshotData,
    pub keep_from: u64,
}

impl Durable {
    /// Applies `p` as a durable store must.
    pub fn apply(&mut self, p: &Persist) {
        if let Some(snap) = &p.snapshot {
            self.entries.clear();
            self.snapshot = Some(snap.clone());
        }
        if let Some(first) = p.entries.first() {
            self.entries.retain(|e| e.index < first.index);
            self.entries.extend(p.entries.iter().cloned());
        }
        if let Some(hs) = &p.hard_state {
            self.hard_state = hs.clone();
        }
    }

    /// Applies a compaction as a durable store must.
    pub fn compact(&mut self, c: &Compaction) {
        self.snapshot = Some(c.snapshot.clone());
        self.entries.retain(|e| e.index >= c.keep_from);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
}

#[derive(Debug, Default)]
pub struct Output {
    pub send: Vec<Message>,
    pub persist: Persist,
    pub send_after_persist: Vec<Message>,
    /// Committed entries (index, data), in log order; raft's own empty and configuration
    /// entries are left out.
    pub committed: Vec<(u64, Vec<u8>)>,
}

pub struct Quorum {
    raw: RawNode<MetaStorage>,
    rng: SplitMix,
    election_ticks: usize,
    seen: (u64, StateRole),
}

impl Quorum {
    pub fn start(config: &QuorumConfig, durable: Durable) -> Result<Self, QuorumError> {
        if config.voters.is_empty() || !config.voters.contains(&config.node_id) {
            return Err(QuorumError::Config(format!(
                "node {} is not among the voters {:?}",
                config.node_id, config.voters
            )));
        }
        let storage = MetaStorage::new(ConfState::from((config.voters.clone(), Vec::<u64>::new())));
        let mut hard_state = durable.hard_state.clone();
        let applied = match durable.snapshot {
            Some(snap) => {
                let index = snap.index;
                hard_state.commit = hard_state.commit.max(index);
                hard_state.term = hard_state.term.max(snap.term);
                storage.set_snapshot(snap, None);
                let after: Vec<Entry> = durable
                    .entries
                    .into_iter()
                    .filter(|e| e.index > index)
                    .collect();
                storage.append(&after).map_err(QuorumError::Raft)?;
                index
            }
            None => {
                storage
                    .append(&durable.entries)
                    .map_err(QuorumError::Raft)?;
                0
            }
        };
        storage.set_hard_state(hard_state);
        let raft_config = raft::Config {
            id: config.node_id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            // raft-rs draws each timeout in [min, max) from the thread's generator at every
            // change of term or role; the node replaces the draw at once (`after_input`).
            min_election_tick: config.election_ticks,
            max_election_tick: 2 * config.election_ticks,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            applied,
            ..Default::default()
        };
        raft_config
            .validate()
            .map_err(|e| QuorumError::Config(e.to_string()))?;
        let raw = RawNode::new(&raft_config, storage, &log_bridge::logger(config.node_id))
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let mut q = Quorum {
            seen: (raw.raft.term, raw.raft.state),
            raw,
            rng: SplitMix(config.seed ^ config.node_id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            election_ticks: config.election_ticks,
        };
        q.draw_timeout();
        Ok(q)
    }

    pub fn node_id(&self) -> u64 {
        self.raw.raft.id
    }

    pub fn role(&self) -> Role {
        match self.raw.raft.state {
            StateRole::Leader => Role::Leader,
            StateRole::Follower => Role::Follower,
            StateRole::Candidate | StateRole::PreCandidate => Role::Candidate,
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    pub fn leader(&self) -> Option<u64> {
        Some(self.raw.raft.leader_id).filter(|&l| l != raft::INVALID_ID)
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    pub fn commit_index(&self) -> u64 {
        self.raw.raft.raft_log.committed
    }

    /// Committed entries (index, data) from `from` on, up to about `max_bytes`; raft's own
    /// empty and configuration entries are left out. What an observer is sent; one that
    /// asks for entries the log no longer holds is sent [`snapshot_for`](Self::snapshot_for).
    pub fn committed_entries(&self, from: u64, max_bytes: u64) -> Vec<(u64, Vec<u8>)> {
        use raft::Storage as _;
        let store = &self.raw.raft.raft_log.store;
        let first = store.first_index().max(from).max(1);
        if from < store.first_index() {
            return Vec::new();
        }
        let high = self.commit_index() + 1;
        if first >= high {
            return Vec::new();
        }
        store
            .entries(
                first,
                high,
                max_bytes,
                raft::GetEntriesContext::empty(false),
            )
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty())
            .map(|e| (e.index, e.data.to_vec()))
            .collect()
    }

    /// The latest snapshot, if entries from `from` are no longer in the log.
    pub fn snapshot_for(&self, from: u64) -> Option<SnapshotData> {
        let store = &self.raw.raft.raft_log.store;
        if from >= store.first_index() {
            return None;
        }
        store.snapshot_data()
    }

    /// The index of the latest snapshot (0: none).
    pub fn snapshot_index(&self) -> u64 {
        let store = &self.raw.raft.raft_log.store;
        store.snapshot_data().map_or(0, |s| s.index)
    }

    /// Takes a snapshot of the owner's state machine, `data`, as of the applied `index`, and
    /// lets go of the log's entries up to `index`, but for the last `keep` of them (a peer
    /// a little behind is sent those, not the snapshot). The owner saves what it returns.
    pub fn compact(
        &mut self,
        index: u64,
        data: Vec<u8>,
        keep: u64,
    ) -> Result<Compaction, QuorumError> {
        let applied = self.raw.raft.raft_log.applied;
        if index > applied || index <= self.snapshot_index() {
            return Err(QuorumError::Raft(format!(
                "no snapshot at {index}: applied {applied}, latest snapshot at {}",
                self.snapshot_index()
            )));
        }
        let term = self
            .raw
            .raft
            .raft_log
            .term(index)
            .map_err(|e| QuorumError::Raft(e.to_string()))?;
        let snapshot = SnapshotData { index, term, data };
        let keep_from = (index + 1).saturating_sub(keep).max(1);
        self.raw
            .raft
            .raft_log
            .store
            .set_snapshot(snapshot.clone(), Some(keep_from));
        Ok(Compaction {
            snapshot,
            keep_from,
        })
    }

    /// One tick of the node's clock.
    pub fn tick(&mut self) {
        self.raw.tick();
        self.after_input();
    }

    /// A message from a peer. Messages of an older term, or that raft-rs does not expect,
    /// are dropped by raft-rs itself (that is Raft).
    pub fn step(&mut self, msg: Message) -> Result<(), QuorumError> {
        let r = self.raw.step(msg);
        self.after_input();
        r.map_err(|e| QuorumError::Raft(e.to_string()))
    }

    /// Proposes `data` for the log; only the leader accepts.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), QuorumError> {
        if !self.is_leader() {
            return Err(QuorumError::NotLeader {
                leader: self.leader(),
            });
        }
        let r = self.raw.propose(Vec::new(), data);
        self.after_input();
        r.map_err(|_| QuorumError::NotLeader {
            leader: self.leader(),
        })
    }

    /// What the node has to do now, if anything.
    pub fn ready(&mut self) -> Option<Output> {
        if !self.raw.has_ready() {
            return None;
        }
        let store = self.raw.raft.raft_log.store.clone();
        let mut rd = self.raw.ready();
        let mut out = Output {
            send: rd.take_messages(),
            ..Output::default()
        };
        // Snapshots sent: reported as delivered, so the peer's progress moves on (one that
        // was lost shows as a rejected append, and another snapshot goes).
        let snapshots_to: Vec<u64> = out
            .send
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            .map(|m| m.to)
            .collect();
        let mut hard_state_changed = false;
        if !rd.snapshot().is_empty() {
            let s = rd.snapshot();
            let snap = SnapshotData {
                index: s.get_metadata().index,
                term: s.get_metadata().term,
                data: s.data.to_vec(),
            };
            store.set_snapshot(snap.clone(), None);
            out.persist.snapshot = Some(snap);
            hard_state_changed = true;
        }
        let mut committed = rd.take_committed_entries();
        if !rd.entries().is_empty() {
            let entries = rd.take_entries();
            // Refused only for entries that do not follow what is held, which raft-rs never
            // hands out.
            if let Err(e) = store.append(&entries) {
                tracing::error!("the metadata log's view refused raft-rs's entries: {e}");
            }
            out.persist.entries = entries;
        }
        if let Some(hs) = rd.hs() {
            store.set_hard_state(hs.clone());
            hard_state_changed = true;
        }
        out.send_after_persist = rd.take_persisted_messages();
        let mut light = self.raw.advance(rd);
        if let Some(commit) = light.commit_index() {
            store.set_commit(commit);
            hard_state_changed = true;
        }
        out.send_after_persist.extend(light.take_messages());
        committed.extend(light.take_committed_entries());
        self.raw.advance_apply();
        for to in snapshots_to {
            self.raw.report_snapshot(to, SnapshotStatus::Finish);
        }
        if hard_state_changed {
            out.persist.hard_state = Some(store.hard_state());
        }
        out.committed = committed
            .into_iter()
            .filter(|e| e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty())
            .map(|e| (e.index, e.data.to_vec()))
            .collect();
        self.after_input();
        Some(out)
    }

    fn after_input(&mut self) {
        let now = (self.raw.raft.term, self.raw.raft.state);
        if now != self.seen {
            self.seen = now;
            self.draw_timeout();
        }
    }

    fn draw_timeout(&mut self) {
        let e = self.election_ticks as u64;
        let t = e + self.rng.next() % e;
        self.raw.raft.set_randomized_election_timeout(t as usize);
    }
}

/// A small seeded generator (SplitMix64): reproducible election timeouts.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
