//! What the shards share and how they talk. `Cluster` is the one `Send + Sync` object: the
//! network settings, a snapshot of topic metadata (replaced whole on change, read without
//! waiting on any shard), and the shard mesh (`spate_mesh`). `Shard` is one shard's own
//! state: its partitions, producer state, consumer groups and its end of the mesh. Work for
//! another shard travels as a closure through the mesh's bounded queues and the result comes
//! back home; record data inside is `Bytes`, so crossing shards copies none of it.

use std::cell::RefCell;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex, RwLock};

use futures_channel::oneshot;
use spate_engine::metadata::{Metadata, MetadataStore, TopicConfig, TopicMeta};
use spate_engine::registry::ShardLogs;
use spate_engine::{EngineError, LogConfig};
use spate_mesh::{Endpoint, Mesh};
pub use spate_mesh::{HomeSender, JoinError, ShardGone};

use crate::groups::Coordinator;
use crate::offsets_compaction::OffsetsWriter;
use crate::producers::ProducerStates;

/// Network and protocol settings (the `[kafka]` part of the broker's configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// Host and port that Metadata tells clients to connect to.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Requests larger than this close the connection.
    pub max_request_bytes: usize,
    /// The most bytes of records one fetch reads and answers (Kafka's `fetch.max.bytes`).
    pub fetch_max_bytes: usize,
    /// Create unknown topics named in a Metadata request (if the client allows it).
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics and of CreateTopics without a count.
    pub default_partitions: u32,
    /// How long a new consumer group waits for more members before its first assignment.
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// Partitions of `__consumer_offsets`, fixed when it is first created.
    pub offsets_topic_partitions: u32,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            advertised_host: "127.0.0.1".into(),
            advertised_port: 9092,
            max_request_bytes: 100 * 1024 * 1024,
            // Kafka's default: 55 MiB.
            fetch_max_bytes: 55 * 1024 * 1024,
            auto_create_topics: true,
            default_partitions: 1,
            group_initial_rebalance_delay_ms: 300,
            group_min_session_timeout_ms: 1000,
            group_max_session_timeout_ms: 300_000,
            offsets_topic_partitions: 4,
        }
    }
}

pub struct Cluster {
    pub config: NetConfig,
    pub cluster_id: String,
    pub data_dir: PathBuf,
    pub log_defaults: LogConfig,
    shard_count: usize,
    metadata: RwLock<Arc<Metadata>>,
    /// Calls between shards: one bounded queue per pair of shards.
    pub mesh: Arc<Mesh<Shard>>,
    /// The metadata file, owned by shard 0 once it starts.
    store: Mutex<Option<MetadataStore>>,
}

impl Cluster {
    pub fn new(
        config: NetConfig,
        shard_count: usize,
        store: MetadataStore,
        data_dir: PathBuf,
        log_defaults: LogConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            cluster_id: cluster_id(&data_dir),
            config,
            data_dir,
            log_defaults,
            shard_count,
            metadata: RwLock::new(Arc::new(store.metadata().clone())),
            mesh: Mesh::new(shard_count, spate_mesh::DEFAULT_INBOX_CAPACITY),
            store: Mutex::new(Some(store)),
        })
    }

    pub fn shard_count(&self) -> usize {
        self.shard_count
    }

    /// The current topic metadata.
    pub fn metadata(&self) -> Arc<Metadata> {
        match self.metadata.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn publish(&self, m: Metadata) {
        let m = Arc::new(m);
        match self.metadata.write() {
            Ok(mut g) => *g = m,
            Err(poisoned) => *poisoned.into_inner() = m,
        }
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.metadata()
            .topics
            .iter()
            .find(|t| t.name == name)
            .cloned()
    }

    /// Owner shard of a partition, if the partition exists.
    pub fn owner(&self, topic: &str, partition: i32) -> Option<usize> {
        let m = self.metadata();
        let t = m.topics.iter().find(|t| t.name == topic)?;
        let p = usize::try_from(partition).ok()?;
        t.partition_shards.get(p).map(|s| *s as usize)
    }
}

/// A stable id for the cluster, kept in the data directory.
fn cluster_id(data_dir: &std::path::Path) -> String {
    let path = data_dir.join("cluster-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return id;
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!("spate-{:x}-{:x}", nanos, std::process::id());
    if let Err(e) = std::fs::write(&path, &id) {
        tracing::warn!("cannot record the cluster id in {}: {e}", path.display());
    }
    id
}

/// One shard's state, shared by its tasks.
pub struct Shard {
    pub id: usize,
    pub cluster: Arc<Cluster>,
    pub logs: Rc<ShardLogs>,
    /// This shard's end of the mesh.
    pub mesh: Endpoint<Shard>,
    /// The metadata file: only shard 0 has it and makes every change to it.
    store: Option<RefCell<MetadataStore>>,
    /// One metadata change at a time: each is saved off the reactor, across an await.
    metadata_turn: glommio::sync::Semaphore,
    pub(crate) producers: ProducerStates,
    pub(crate) groups: Rc<Coordinator>,
    /// Appends (and compacts) the `__consumer_offsets` partitions this shard coordinates.
    pub(crate) offsets: OffsetsWriter,
}

impl Shard {
    /// Builds the shard's state and starts serving its inboxes on the mesh. Shard 0 takes the
    /// metadata file. Runs on the shard's executor; each shard starts once.
    pub fn start(
        id: usize,
        cluster: Arc<Cluster>,
        logs: Rc<ShardLogs>,
    ) -> Result<Rc<Self>, JoinError> {
        let mesh = cluster.mesh.join(id)?;
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
            offsets: OffsetsWriter::default(),
        });
        shard.mesh.serve(&shard);
        Ok(shard)
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

    /// Changes the metadata file (on shard 0, its owner): `change` runs on a scratch copy of
    /// the store, the copy is saved on glommio's blocking thread (the write, fsync, rename
    /// and directory fsync would stall every request of this shard), then made current and
    /// published. A change that fails, or whose save fails, leaves the metadata as it was.
    /// Changes run one at a time, in the order they were asked for.
    async fn change_metadata<T>(
        &self,
        change: impl FnOnce(&mut MetadataStore) -> Result<T, EngineError>,
    ) -> Result<T, EngineError> {
        let store = self.store.as_ref().ok_or(EngineError::Closed)?;
        let _turn = self
            .metadata_turn
            .acquire_permit(1)
            .await
            .map_err(|_| EngineError::Closed)?;
        let mut scratch = store.borrow().scratch();
        let out = change(&mut scratch)?;
        if scratch.metadata() != store.borrow().metadata() {
            let save = scratch.save_job()?;
            glommio::executor().spawn_blocking(save).await?;
        }
        let mut st = store.borrow_mut();
        st.install(scratch);
        self.cluster.publish(st.metadata().clone());
        Ok(out)
    }

    /// A oneshot channel whose receiver is on this shard and whose sender may travel to
    /// another shard: see [`HomeSender`].
    pub fn home_channel<T: Send + 'static>(&self) -> (HomeSender<T>, oneshot::Receiver<T>) {
        self.mesh.home_channel()
    }

    /// Creates a topic (on shard 0, which owns the metadata file) and opens its partitions on
    /// their owners before returning.
    pub async fn create_topic(
        self: &Rc<Self>,
        name: String,
        partitions: u32,
        config: TopicConfig,
    ) -> Result<TopicMeta, EngineError> {
        self.call(0, move |s| {
            Box::pin(async move { s.create_topic_here(name, partitions, config).await })
        })
        .await
        .map_err(|_| EngineError::Closed)?
    }

    async fn create_topic_here(
        self: &Rc<Self>,
        name: String,
        partitions: u32,
        config: TopicConfig,
    ) -> Result<TopicMeta, EngineError> {
        let store = self.store.as_ref().ok_or(EngineError::Closed)?;
        // A new topic on a disk below its floor could take nothing, and would spend the
        // reserve that deleting topics needs.
        if let Some(space) = self.logs.disk_space() {
            if store.borrow().topic(&name).is_none() {
                space.admit_append(0)?;
            }
        }
        let shards = self.cluster.shard_count;
        let topic = self
            .change_metadata(|st| st.create_topic(&name, partitions, config, shards))
            .await?;
        tracing::info!(topic = %name, partitions, "topic created");
        self.open_partitions(&topic, 0).await?;
        Ok(topic)
    }

    /// Opens partitions `from..` of `topic` on their owner shards.
    async fn open_partitions(
        self: &Rc<Self>,
        topic: &TopicMeta,
        from: u32,
    ) -> Result<(), EngineError> {
        let mut by_shard: std::collections::BTreeMap<usize, Vec<u32>> = Default::default();
        for (p, s) in topic
            .partition_shards
            .iter()
            .enumerate()
            .skip(from as usize)
        {
            by_shard.entry(*s as usize).or_default().push(p as u32);
        }
        let config = topic.config.apply(&self.cluster.log_defaults);
        for (shard, parts) in by_shard {
            let name = topic.name.clone();
            let config = config.clone();
            self.call(shard, move |s| {
                Box::pin(async move {
                    for p in parts {
                        if s.logs.get(&name, p).is_none() {
                            s.logs.open_partition(&name, p, config.clone()).await?;
                        }
                    }
                    Ok::<(), EngineError>(())
                })
            })
            .await
            .map_err(|_| EngineError::Closed)??;
        }
        Ok(())
    }

    /// Adds partitions to a topic, up to `total`.
    pub async fn add_partitions(
        self: &Rc<Self>,
        name: String,
        total: u32,
    ) -> Result<TopicMeta, EngineError> {
        self.call(0, move |s| {
            Box::pin(async move {
                if let Some(space) = s.logs.disk_space() {
                    space.admit_append(0)?;
                }
                let shards = s.cluster.shard_count;
                let (topic, before) = s
                    .change_metadata(|st| {
                        let before = st
                            .topic(&name)
                            .map(|t| t.partitions())
                            .ok_or_else(|| EngineError::UnknownPartition(name.clone()))?;
                        Ok((st.add_partitions(&name, total, shards)?, before))
                    })
                    .await?;
                tracing::info!(topic = %name, from = before, to = total, "partitions added");
                s.open_partitions(&topic, before).await?;
                Ok(topic)
            })
        })
        .await
        .map_err(|_| EngineError::Closed)?
    }

    /// Deletes a topic: forgets it in the metadata, then closes and removes its partitions.
    pub async fn delete_topic(self: &Rc<Self>, name: String) -> Result<(), EngineError> {
        self.call(0, move |s| {
            Box::pin(async move {
                let topic = s.change_metadata(|st| st.delete_topic(&name)).await?;
                let shards: std::collections::BTreeSet<usize> =
                    topic.partition_shards.iter().map(|s| *s as usize).collect();
                for shard in shards {
                    let name = name.clone();
                    let _ = s
                        .call(shard, move |s| {
                            Box::pin(async move {
                                s.logs.remove_topic(&name).await;
                                s.producers.forget_topic(&name);
                            })
                        })
                        .await;
                }
                // Thousands of files for a large topic: not on this shard's reactor.
                let dir = s.cluster.data_dir.join("topics").join(&name);
                let removed = glommio::executor()
                    .spawn_blocking({
                        let dir = dir.clone();
                        move || std::fs::remove_dir_all(dir)
                    })
                    .await;
                if let Err(e) = removed {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!("cannot remove {}: {e}", dir.display());
                    }
                }
                tracing::info!(topic = %name, "topic deleted");
                Ok(())
            })
        })
        .await
        .map_err(|_| EngineError::Closed)?
    }

    /// Replaces a topic's settings and applies them to its open partitions.
    pub async fn set_topic_config(
        self: &Rc<Self>,
        name: String,
        config: TopicConfig,
    ) -> Result<(), EngineError> {
        self.call(0, move |s| {
            Box::pin(async move {
                let topic = s
                    .change_metadata(|st| {
                        st.set_topic_config(&name, config)?;
                        st.topic(&name)
                            .cloned()
                            .ok_or_else(|| EngineError::UnknownPartition(name.clone()))
                    })
                    .await?;
                let log_config = topic.config.apply(&s.cluster.log_defaults);
                let shards: std::collections::BTreeSet<usize> =
                    topic.partition_shards.iter().map(|s| *s as usize).collect();
                for shard in shards {
                    let name = name.clone();
                    let log_config = log_config.clone();
                    let n = topic.partitions();
                    let _ = s
                        .call(shard, move |s| {
                            Box::pin(async move {
                                for p in 0..n {
                                    if let Some(log) = s.logs.get(&name, p) {
                                        log.set_config(log_config.clone());
                                    }
                                }
                            })
                        })
                        .await;
                }
                Ok(())
            })
        })
        .await
        .map_err(|_| EngineError::Closed)?
    }

    /// Allocates a producer id (InitProducerId), persisted in blocks so ids never repeat.
    pub async fn allocate_producer_id(self: &Rc<Self>) -> Result<i64, EngineError> {
        self.call(0, |s| {
            Box::pin(async move {
                // A new block of ids is saved once per 1000; the rest change nothing on disk.
                s.change_metadata(|st| st.next_producer_id()).await
            })
        })
        .await
        .map_err(|_| EngineError::Closed)?
    }
}
