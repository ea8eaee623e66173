//! The consumer groups of one shard's `Coordinator`, beside its classic groups. A group name
//! is one or the other: a heartbeat for a classic group with members is GROUP_ID_NOT_FOUND
//! ("not a consumer group"), a JoinGroup for a consumer group with members is
//! INCONSISTENT_GROUP_PROTOCOL; an empty group of either kind gives way to the other (as
//! Kafka converts an empty group). Committed offsets are shared by both kinds and go through
//! the commit log either way; consumer group state itself is in memory only.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    ConsumerGroup, ConsumerGroupState, GroupError, HeartbeatAnswer, HeartbeatRequest, TopicImage,
    JOIN_EPOCH, LEAVE_EPOCH, STALE_MEMBER_EPOCH, STATIC_LEAVE_EPOCH, UNKNOWN_MEMBER_ID,
    UNSUPPORTED_VERSION,
};
use crate::config::NetConfig;
use crate::groups::{Coordinator, GROUP_ID_NOT_FOUND, NONE, NON_EMPTY_GROUP};
use crate::metadata::Metadata;

/// The broker's consumer protocol settings (Kafka's `group.consumer.*`).
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// A member silent for this long is fenced (`group.consumer.session.timeout.ms`).
    pub session_timeout: Duration,
    /// How often members heartbeat (`group.consumer.heartbeat.interval.ms`).
    pub heartbeat_interval_ms: i32,
}

impl ConsumerSettings {
    pub fn new(config: &NetConfig) -> Self {
        Self {
            session_timeout: Duration::from_millis(
                config.group_consumer_session_timeout_ms.max(1) as u64
            ),
            heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
        }
    }
}

/// The topic image of the latest metadata snapshot seen, and its version.
#[derive(Default)]
pub(crate) struct ImageCache {
    snapshot: Option<Arc<Metadata>>,
    image: Rc<TopicImage>,
    version: u64,
}

/// The consumer groups of a shard, with what they need beside the groups.
pub(crate) struct ConsumerGroups {
    pub(crate) groups: RefCell<std::collections::HashMap<String, ConsumerGroup>>,
    pub(crate) settings: ConsumerSettings,
    image: RefCell<ImageCache>,
}

impl ConsumerGroups {
    pub(crate) fn new(config: &NetConfig) -> Self {
        Self {
            groups: RefCell::new(Default::default()),
            settings: ConsumerSettings::new(config),
            image: RefCell::new(ImageCache::default()),
        }
    }

    /// The topic image of `metadata`, built once per snapshot.
    fn image_of(&self, metadata: &Arc<Metadata>) -> (Rc<TopicImage>, u64) {
        let mut cache = self.image.borrow_mut();
        let same = cache
            .snapshot
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, metadata));
        if !same {
            cache.image = Rc::new(TopicImage::new(metadata.topics.iter().map(|t| {
                (
                    t.name.clone(),
                    uuid::Uuid::from_bytes(t.topic_id),
                    t.partitions(),
                    t.name == crate::OFFSETS_TOPIC,
                )
            })));
            cache.snapshot = Some(metadata.clone());
            cache.version += 1;
        }
        (cache.image.clone(), cache.version)
    }

    /// The last image seen (for the timers, which have no snapshot of their own).
    fn last_image(&self) -> (Rc<TopicImage>, u64) {
        let cache = self.image.borrow();
        (cache.image.clone(), cache.version)
    }
}

/// What the commit check of a consumer group says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerCommitCheck {
    /// Not a consumer group: the classic rules apply.
    NotConsumer,
    /// The commit may go ahead (NONE) or is refused with this error.
    Answer(i16),
}

/// What ConsumerGroupDescribe shows of a group.
#[derive(Debug, Clone)]
pub struct ConsumerDescription {
    pub state: ConsumerGroupState,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<(super::ConsumerMember, super::Assignment)>,
    pub image: Rc<TopicImage>,
}

fn not_consumer(group: &str) -> GroupError {
    GroupError::new(
        GROUP_ID_NOT_FOUND,
        format!("Group {group} is not a consumer group."),
    )
}

impl Coordinator {
    /// ConsumerGroupHeartbeat. `version` is the request's; `metadata` the topics now.
    pub fn consumer_heartbeat(
        &self,
        group: &str,
        mut req: HeartbeatRequest,
        version: i16,
        metadata: &Arc<Metadata>,
        now: Instant,
    ) -> Result<HeartbeatAnswer, GroupError> {
        super::heartbeat::validate(group, &req, version)?;
        let cg = &self.consumer;
        let (image, image_version) = cg.image_of(metadata);
        let mut groups = cg.groups.borrow_mut();
        let classic_members = self
            .groups
            .borrow()
            .get(group)
            .map(|g| !g.members.is_empty());
        if req.member_epoch == JOIN_EPOCH {
            match classic_members {
                Some(true) => return Err(not_consumer(group)),
                // An empty classic group becomes a consumer group (its offsets stay).
                Some(false) => {
                    self.groups.borrow_mut().remove(group);
                }
                None => {}
            }
            if req.member_id.is_empty() {
                // v0: the coordinator names the member.
                req.member_id = self.new_member_id(&req.client_id);
            }
        }
        let Some(g) = (if req.member_epoch == JOIN_EPOCH {
            Some(groups.entry(group.to_string()).or_default())
        } else {
            groups.get_mut(group)
        }) else {
            if classic_members == Some(true) {
                return Err(not_consumer(group));
            }
            // Kafka answers GROUP_ID_NOT_FOUND, but its groups outlive a restart and these
            // do not: UNKNOWN_MEMBER_ID makes the member rejoin.
            return Err(GroupError::new(
                UNKNOWN_MEMBER_ID,
                format!("Member {} is not a member of group {group}.", req.member_id),
            ));
        };
        let answer = if req.member_epoch == LEAVE_EPOCH || req.member_epoch == STATIC_LEAVE_EPOCH {
            g.leave(group, &req, &image, image_version)
        } else {
            g.heartbeat(group, &req, &image, image_version, &cg.settings, now)
        };
        debug_assert_eq!(g.check_exclusive(), Ok(()), "group {group}");
        if let Err(e) = &answer {
            tracing::debug!(group, member = %req.member_id, epoch = req.member_epoch, error = e.code, message = %e.message, "consumer heartbeat refused");
        }
        answer
    }

    /// Fences the consumer group members that expired (called by the ticker).
    pub(crate) fn tick_consumer_groups(&self, now: Instant) {
        let (image, version) = self.consumer.last_image();
        for (name, g) in self.consumer.groups.borrow_mut().iter_mut() {
            for (member, why) in g.expire(now, &image, version) {
                tracing::info!(group = %name, member = %member, "consumer group member fenced: {why}");
            }
            debug_assert_eq!(g.check_exclusive(), Ok(()), "group {name}");
        }
    }

    /// Whether a classic JoinGroup may go ahead: not for a consumer group with members (an
    /// empty one is dropped, its offsets stay).
    pub(crate) fn classic_join_allowed(&self, group: &str) -> bool {
        let mut groups = self.consumer.groups.borrow_mut();
        match groups.get(group) {
            Some(g) if !g.members.is_empty() => false,
            Some(_) => {
                groups.remove(group);
                true
            }
            None => true,
        }
    }

    pub fn is_consumer_group(&self, group: &str) -> bool {
        self.consumer.groups.borrow().contains_key(group)
    }

    /// OffsetCommit to a consumer group (Kafka's `ConsumerGroup.validateOffsetCommit`): from a
    /// member at its current epoch, with OffsetCommit v9 or later; or, with no epoch (-1),
    /// to a group without members.
    pub fn check_consumer_commit(
        &self,
        group: &str,
        member_id: &str,
        epoch: i32,
        version: i16,
    ) -> ConsumerCommitCheck {
        let groups = self.consumer.groups.borrow();
        let Some(g) = groups.get(group) else {
            return ConsumerCommitCheck::NotConsumer;
        };
        if epoch < 0 && g.members.is_empty() {
            return ConsumerCommitCheck::Answer(NONE);
        }
        let Some(m) = g.members.get(member_id) else {
            return ConsumerCommitCheck::Answer(UNKNOWN_MEMBER_ID);
        };
        if version < 9 {
            return ConsumerCommitCheck::Answer(UNSUPPORTED_VERSION);
        }
        if epoch != m.epoch {
            return ConsumerCommitCheck::Answer(STALE_MEMBER_EPOCH);
        }
        ConsumerCommitCheck::Answer(NONE)
    }

    /// OffsetFetch v9 with a member id and epoch: checked against a consumer group (classic
    /// groups check nothing, as in Kafka).
    pub fn check_consumer_fetch(&self, group: &str, member_id: Option<&str>, epoch: i32) -> i16 {
        if member_id.is_none() && epoch < 0 {
            return NONE;
        }
        let groups = self.consumer.groups.borrow();
        let Some(g) = groups.get(group) else {
            return NONE;
        };
        match member_id.and_then(|id| g.members.get(id)) {
            None => UNKNOWN_MEMBER_ID,
            Some(m) if m.epoch != epoch => STALE_MEMBER_EPOCH,
            Some(_) => NONE,
        }
    }

    /// ConsumerGroupDescribe of one group.
    pub fn consumer_describe(&self, group: &str) -> Result<ConsumerDescription, GroupError> {
        let groups = self.consumer.groups.borrow();
        let Some(g) = groups.get(group) else {
            return Err(if self.groups.borrow().contains_key(group) {
                not_consumer(group)
            } else {
                GroupError::new(GROUP_ID_NOT_FOUND, format!("Group {group} not found."))
            });
        };
        let (image, _) = self.consumer.last_image();
        Ok(ConsumerDescription {
            state: g.state(),
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor_name().to_string(),
            members: g
                .members
                .values()
                .map(|m| (m.clone(), g.target_of(&m.id)))
                .collect(),
            image,
        })
    }

    /// The consumer groups listed: name and state.
    pub(crate) fn list_consumer_groups(&self) -> Vec<(String, ConsumerGroupState)> {
        self.consumer
            .groups
            .borrow()
            .iter()
            .map(|(n, g)| (n.clone(), g.state()))
            .collect()
    }

    /// OffsetDelete: the topics of `topics` a member of the consumer group subscribes to, or
    /// `None` if it is not a consumer group.
    pub(crate) fn consumer_subscribed_of(
        &self,
        group: &str,
        topics: &[String],
    ) -> Option<BTreeSet<String>> {
        let groups = self.consumer.groups.borrow();
        let g = groups.get(group)?;
        let (image, _) = self.consumer.last_image();
        let subscribed = g.subscribed_topic_names(&image);
        Some(
            topics
                .iter()
                .filter(|t| subscribed.contains(*t))
                .cloned()
                .collect(),
        )
    }

    /// DeleteGroups of a consumer group: `None` if it is not one; NON_EMPTY_GROUP while it has
    /// members; otherwise it is gone.
    pub(crate) fn delete_consumer_group(&self, group: &str) -> Option<Result<(), i16>> {
        let mut groups = self.consumer.groups.borrow_mut();
        let g = groups.get(group)?;
        if !g.members.is_empty() {
            return Some(Err(NON_EMPTY_GROUP));
        }
        groups.remove(group);
        Some(Ok(()))
    }
}
