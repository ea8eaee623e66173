//! One shard's state, shared by its tasks: its partitions (`ShardLogs`), idempotent producer
//! state, the consumer groups it coordinates, its `__consumer_offsets` writer, its end of the
//! mesh, and on shard 0 the metadata file. Work for another shard travels as a closure over
//! the mesh and the result comes back home; record data inside is `Bytes`, so crossing shards
//! copies none of it. The admin operations that change metadata are in `topic_controller`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use crate::metadata::MetadataStore;
use futures_channel::oneshot;
use spate_engine::registry::ShardLogs;
use spate_mesh::{Endpoint, HomeSender, JoinError, Mesh, ShardGone};
use spate_replication::pipeline::ShardReplicas;

use crate::cluster::Cluster;
use crate::groups::Coordinator;
use crate::producers::ProducerStates;

/// The mesh the shards of a broker call each other over.
pub type ShardMesh = Mesh<Shard>;

/// One shard's state, shared by its tasks.
pub struct Shard {
    pub id: usize,
    pub cluster: Arc<Cluster>,
    pub logs: Rc<ShardLogs>,
    /// This shard's end of the mesh.
    pub mesh: Endpoint<Shard>,
    /// The metadata file: only shard 0 has it and makes every change to it.
    pub(crate) store: Option<RefCell<MetadataStore>>,
    /// One metadata change at a time: each is saved off the reactor, across an await.
    pub(crate) metadata_turn: glommio::sync::Semaphore,
    pub(crate) producers: ProducerStates,
    /// In a cluster, on shard 0: the producer ids `[next, end)` the controller gave this
    /// broker and it has not handed out yet, and one request for more at a time.
    pub(crate) producer_id_block: std::cell::Cell<(i64, i64)>,
    pub(crate) producer_id_turn: glommio::sync::Semaphore,
    pub(crate) groups: Rc<Coordinator>,
    /// Records appended to each partition of a topic with `flush.messages` since the last
    /// append that waited for an fdatasync (`flush_policy_durability`).
    pub(crate) unflushed_records: RefCell<HashMap<(String, u32), i64>>,
    /// In a cluster: the roles of this shard's partitions (leader, follower) and their
    /// replication state.
    pub replicas: Option<Rc<ShardReplicas>>,
}

impl Shard {
    /// Builds the shard's state and starts serving its inboxes on the mesh. Shard 0 takes the
    /// metadata file. Runs on the shard's executor; each shard starts once.
    pub fn start(
        id: usize,
        cluster: Arc<Cluster>,
        mesh: &Arc<Mesh<Shard>>,
        logs: Rc<ShardLogs>,
        replicas: Option<Rc<ShardReplicas>>,
    ) -> Result<Rc<Self>, JoinError> {
        let mesh = mesh.join(id)?;
        let store = if id == 0 {
            cluster
                .store
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .map(RefCell::new)
        } else {
            None
        };
        let shard = Rc::new(Shard {
            id,
            groups: Rc::new(Coordinator::new(&cluster.config)),
            cluster,
            logs,
            mesh,
            store,
            metadata_turn: glommio::sync::Semaphore::new(1),
            producers: ProducerStates::default(),
            producer_id_block: std::cell::Cell::new((0, 0)),
            producer_id_turn: glommio::sync::Semaphore::new(1),
            unflushed_records: RefCell::new(HashMap::new()),
            replicas,
        });
        shard.mesh.serve(&shard);
        Ok(shard)
    }

    /// The mesh of `shards` shards, one bounded queue per pair
    /// ([`spate_mesh::DEFAULT_INBOX_CAPACITY`] calls), built once and given to every shard's
    /// [`Shard::start`].
    pub fn mesh(shards: usize) -> Arc<Mesh<Shard>> {
        Mesh::new(shards, spate_mesh::DEFAULT_INBOX_CAPACITY)
    }

    /// Runs `f` on shard `shard` with that shard's state and returns its result: inline on
    /// this shard, one mesh message (and its answer) to another.
    pub async fn call<R, F, Fut>(&self, shard: usize, f: F) -> Result<R, ShardGone>
    where
        R: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        self.mesh.call(shard, f).await
    }

    /// `flush.messages`: the durability of an append of `records` to a partition of this
    /// shard. An append that brings the records since the last synced one to the topic's
    /// `flush.messages` waits for an fdatasync (which covers everything written before it),
    /// whatever the producer's acks; the others keep `asked`.
    pub(crate) fn flush_policy_durability(
        &self,
        topic: &str,
        partition: u32,
        records: i64,
        asked: spate_engine::Durability,
    ) -> spate_engine::Durability {
        let Some(settings) = self.cluster.topic_settings(topic) else {
            return asked;
        };
        if settings.flush_messages == i64::MAX {
            return asked;
        }
        let mut counts = self.unflushed_records.borrow_mut();
        let key = (topic.to_string(), partition);
        if asked == spate_engine::Durability::Durable {
            counts.remove(&key);
            return asked;
        }
        let count = counts.entry(key.clone()).or_insert(0);
        *count = count.saturating_add(records);
        if *count >= settings.flush_messages {
            counts.remove(&key);
            spate_engine::Durability::Durable
        } else {
            asked
        }
    }

    /// The leader epoch of a partition of this shard that this broker leads (0 on a single
    /// broker), or NOT_LEADER_OR_FOLLOWER: in a cluster only the leader serves it.
    pub(crate) fn leader_epoch_here(&self, topic: &str, partition: u32) -> Result<i32, i16> {
        use spate_replication::pipeline::Leading;
        match self.replicas.as_ref().map(|r| r.leading(topic, partition)) {
            None => Ok(crate::LEADER_EPOCH),
            Some(Leading::Yes { leader_epoch, .. }) => Ok(leader_epoch),
            Some(Leading::No { .. } | Leading::Unknown) => {
                Err(crate::handlers::code::NOT_LEADER_OR_FOLLOWER)
            }
        }
    }

    /// A oneshot channel whose receiver is on this shard and whose sender may travel to
    /// another shard: see [`HomeSender`].
    pub fn home_channel<T: Send + 'static>(&self) -> (HomeSender<T>, oneshot::Receiver<T>) {
        self.mesh.home_channel()
    }
}
