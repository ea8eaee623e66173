//! KIP-951: a Produce (v10+) or Fetch (v12+) answer that refuses a partition with
//! NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH names the partition's current leader and
//! leader epoch, and the answer (Produce v10+, Fetch v16+) carries those leaders' endpoints, so
//! a client goes to the new leader at once instead of after a metadata refresh. Nothing is
//! named on a single broker, for a partition without a live leader, or while this broker's
//! image is not current (it has not caught up to its own registration since it started).

use std::collections::BTreeSet;
use std::sync::Arc;

use spate_replication::node::ClusterView;

use crate::handlers::code;
use crate::Shard;

/// A broker a hint names: its id and Kafka listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// The hints of one answer: the leaders named so far, whose endpoints the answer carries.
/// The cluster's view is read at the first refusal only, off the path of answers that have
/// none.
pub struct Hints<'a> {
    shard: &'a Shard,
    view: Option<Option<Arc<ClusterView>>>,
    named: BTreeSet<i32>,
}

impl<'a> Hints<'a> {
    pub fn new(shard: &'a Shard) -> Self {
        Self {
            shard,
            view: None,
            named: BTreeSet::new(),
        }
    }

    /// The current leader and leader epoch to name for a partition answered with `error`.
    pub fn leader(&mut self, topic: &str, partition: i32, error: i16) -> Option<(i32, i32)> {
        if error != code::NOT_LEADER_OR_FOLLOWER && error != code::FENCED_LEADER_EPOCH {
            return None;
        }
        let shard = self.shard;
        let view = self
            .view
            .get_or_insert_with(|| shard.cluster.cluster_view().filter(|v| v.registered))
            .as_ref()?;
        let p = view
            .image
            .topic_by_name(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)?;
        let leader = p.state.leader;
        if !view.image.is_live(leader) {
            return None;
        }
        self.named.insert(leader);
        Some((leader, p.state.leader_epoch))
    }

    /// The endpoints of every leader named.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        let Some(Some(view)) = &self.view else {
            return Vec::new();
        };
        self.named
            .iter()
            .filter_map(|id| {
                let r = &view.image.brokers.get(id)?.registration;
                Some(Endpoint {
                    node_id: *id,
                    host: r.listener.host.clone(),
                    port: i32::from(r.listener.port),
                })
            })
            .collect()
    }
}
