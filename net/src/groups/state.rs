//! What a group and a member are, and what a join or a sync answers. The state machine that
//! moves a group between its states is in `rebalance`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub(super) last_seen: Instant,
    pub(super) joined: bool,
}

/// What a member learns when a rebalance's join phase ends.
#[derive(Debug, Clone)]
pub struct JoinOutcome {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// Only for the leader: every member and its metadata for the chosen protocol.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl JoinOutcome {
    pub(super) fn error(error: i16, member_id: &str) -> Self {
        Self {
            error,
            generation: -1,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncOutcome {
    pub error: i16,
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Bytes,
}

#[derive(Debug)]
pub struct Group {
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub members: BTreeMap<String, Member>,
    pub(super) join_waiters: HashMap<String, oneshot::Sender<JoinOutcome>>,
    pub(super) sync_waiters: HashMap<String, oneshot::Sender<SyncOutcome>>,
    /// When the join phase ends even if some members have not rejoined.
    pub(super) join_deadline: Option<Instant>,
    /// A new group's join phase waits at least until then for more members.
    pub(super) initial_delay_until: Option<Instant>,
}

impl Group {
    pub(super) fn new() -> Self {
        Self {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            join_waiters: HashMap::new(),
            sync_waiters: HashMap::new(),
            join_deadline: None,
            initial_delay_until: None,
        }
    }
}

pub struct JoinRequest {
    pub group: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}
