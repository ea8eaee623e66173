//! The consumer protocol driven by hand, without I/O or a clock: the assignors, the
//! reconciliation state machine, heartbeats and timers of a group, and the coordinator's
//! rules between classic and consumer groups.

mod assignor;
mod coordinator;
mod heartbeat;
mod reconcile;
mod simulation;

use std::time::{Duration, Instant};

use super::*;

pub(super) fn tid(n: u8) -> TopicId {
    uuid::Uuid::from_bytes([n; 16])
}

/// Topics (name, id byte, partitions).
pub(super) fn image(topics: &[(&str, u8, u32)]) -> TopicImage {
    TopicImage::new(
        topics
            .iter()
            .map(|(n, id, p)| (n.to_string(), tid(*id), *p, n.starts_with("__"))),
    )
}

pub(super) fn settings() -> ConsumerSettings {
    ConsumerSettings {
        session_timeout: Duration::from_secs(45),
        heartbeat_interval_ms: 5000,
    }
}

/// A join (epoch 0) subscribing to `topics`.
pub(super) fn join(id: &str, topics: &[&str]) -> HeartbeatRequest {
    HeartbeatRequest {
        member_id: id.to_string(),
        member_epoch: JOIN_EPOCH,
        rebalance_timeout_ms: 30_000,
        subscribed_topic_names: Some(topics.iter().map(|t| t.to_string()).collect()),
        owned: Some(Assignment::new()),
        client_id: id.to_string(),
        ..HeartbeatRequest::default()
    }
}

/// A heartbeat reporting what the member owns.
pub(super) fn beat(id: &str, epoch: i32, owned: &Assignment) -> HeartbeatRequest {
    HeartbeatRequest {
        member_id: id.to_string(),
        member_epoch: epoch,
        rebalance_timeout_ms: -1,
        owned: Some(owned.clone()),
        client_id: id.to_string(),
        ..HeartbeatRequest::default()
    }
}

pub(super) fn parts(topic: u8, ps: &[i32]) -> Assignment {
    Assignment::from_pairs(ps.iter().map(|p| (tid(topic), *p)))
}

/// A group and the topics it sees, with a clock that only moves when told.
pub(super) struct Bench {
    pub g: ConsumerGroup,
    pub image: TopicImage,
    pub version: u64,
    pub now: Instant,
}

impl Bench {
    pub fn new(topics: &[(&str, u8, u32)]) -> Self {
        Self {
            g: ConsumerGroup::default(),
            image: image(topics),
            version: 1,
            now: Instant::now(),
        }
    }

    pub fn send(&mut self, req: &HeartbeatRequest) -> Result<HeartbeatAnswer, GroupError> {
        let out = if req.member_epoch < 0 {
            self.g.leave("g", req, &self.image, self.version)
        } else {
            self.g
                .heartbeat("g", req, &self.image, self.version, &settings(), self.now)
        };
        self.g.check_exclusive().expect("no partition held twice");
        out
    }

    pub fn ok(&mut self, req: &HeartbeatRequest) -> HeartbeatAnswer {
        self.send(req).expect("heartbeat accepted")
    }

    pub fn set_topics(&mut self, topics: &[(&str, u8, u32)]) {
        self.image = image(topics);
        self.version += 1;
    }
}
