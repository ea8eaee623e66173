//! What the shards share: `Cluster` is the one `Send + Sync` object of the network layer: the
//! settings and a snapshot of topic metadata (replaced whole on change, read without waiting on
//! any shard). Each shard's own state is `Shard` (`shard.rs`), which holds this and its end of
//! the shard mesh; `Cluster` knows nothing of `Shard`.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use spate_replication::node::{ClusterView, NodeHandle};

use crate::metadata::{Metadata, MetadataStore, TopicConfigs, TopicMeta};
use crate::topic_configs::{BrokerDefaults, TopicSettings};
use spate_engine::LogConfig;

use crate::config::NetConfig;

pub struct Cluster {
    pub config: NetConfig,
    pub cluster_id: String,
    pub data_dir: PathBuf,
    pub log_defaults: LogConfig,
    /// What topics inherit: `log_defaults` and the broker keys of `config`.
    pub broker_defaults: BrokerDefaults,
    pub(crate) shard_count: usize,
    metadata: RwLock<Arc<Metadata>>,
    /// Each topic's configs parsed (`TopicSettings`), replaced with the metadata.
    settings: RwLock<Arc<HashMap<String, Arc<TopicSettings>>>>,
    /// The metadata file, owned by shard 0 once it starts.
    pub(crate) store: Mutex<Option<MetadataStore>>,
    /// The cluster node, when this broker is one of several (`spate serve --voters`).
    node: OnceLock<NodeHandle>,
    /// In a cluster: the `__consumer_offsets` partitions this broker leads and has loaded,
    /// whose groups it coordinates.
    coordinating: RwLock<BTreeSet<u32>>,
}

impl Cluster {
    pub fn new(
        config: NetConfig,
        shard_count: usize,
        store: MetadataStore,
        data_dir: PathBuf,
        log_defaults: LogConfig,
    ) -> Arc<Self> {
        let broker_defaults = BrokerDefaults {
            log: log_defaults.clone(),
            message_max_bytes: config.message_max_bytes,
            min_insync_replicas: config.min_insync_replicas,
            set_in_file: config.broker_keys_set.clone(),
            tiered: config.tiered,
        };
        let cluster = Arc::new(Self {
            cluster_id: cluster_id(&data_dir),
            config,
            data_dir,
            log_defaults,
            broker_defaults,
            shard_count,
            metadata: RwLock::new(Arc::new(Metadata::default())),
            settings: RwLock::new(Arc::new(HashMap::new())),
            store: Mutex::new(None),
            node: OnceLock::new(),
            coordinating: RwLock::new(BTreeSet::new()),
        });
        cluster.publish(store.metadata().clone());
        if let Ok(mut slot) = cluster.store.lock() {
            *slot = Some(store);
        }
        cluster
    }

    /// A topic's configs parsed against this broker's defaults.
    pub fn settings_of(&self, configs: &TopicConfigs) -> Arc<TopicSettings> {
        Arc::new(TopicSettings::new(configs, &self.broker_defaults))
    }

    /// The parsed configs of a topic, if it exists.
    pub fn topic_settings(&self, topic: &str) -> Option<Arc<TopicSettings>> {
        let map = match self.settings.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        map.get(topic).cloned()
    }

    /// Makes this broker a member of a cluster: Metadata and DescribeCluster answer from the
    /// node's view from now on. Once, before the shards start.
    pub fn attach_node(&self, node: NodeHandle) {
        let _ = self.node.set(node);
    }

    /// This broker's node id (`BROKER_ID` on a single node).
    pub fn node_id(&self) -> i32 {
        self.node
            .get()
            .map_or(crate::BROKER_ID, |n| n.view().node_id)
    }

    /// The cluster node, if this broker is one of several.
    pub fn node_handle(&self) -> Option<NodeHandle> {
        self.node.get().cloned()
    }

    /// Whether this broker coordinates the groups of offsets partition `p`: always on a
    /// single broker; in a cluster once it leads the partition and has replayed it.
    pub fn coordinates(&self, p: u32) -> bool {
        if self.node.get().is_none() {
            return true;
        }
        match self.coordinating.read() {
            Ok(s) => s.contains(&p),
            Err(poisoned) => poisoned.into_inner().contains(&p),
        }
    }

    pub(crate) fn set_coordinating(&self, p: u32, on: bool) {
        let mut s = match self.coordinating.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if on {
            s.insert(p);
        } else {
            s.remove(&p);
        }
    }

    /// What the cluster node knows, if this broker is one of several.
    pub fn cluster_view(&self) -> Option<Arc<ClusterView>> {
        self.node.get().map(|n| n.view())
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

    pub(crate) fn publish(&self, m: Metadata) {
        let settings: HashMap<String, Arc<TopicSettings>> = m
            .topics
            .iter()
            .map(|t| (t.name.clone(), self.settings_of(&t.config)))
            .collect();
        let settings = Arc::new(settings);
        let m = Arc::new(m);
        // Settings first: a reader that sees a topic in the metadata finds its settings.
        match self.settings.write() {
            Ok(mut g) => *g = settings,
            Err(poisoned) => *poisoned.into_inner() = settings,
        }
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

    /// The name of the topic with this id (Kafka's topic id, KIP-516). The zero id is no
    /// topic's: ids are random version-4 UUIDs.
    pub fn topic_name_of(&self, topic_id: &[u8; 16]) -> Option<String> {
        if *topic_id == [0; 16] {
            return None;
        }
        self.metadata()
            .topics
            .iter()
            .find(|t| t.topic_id == *topic_id)
            .map(|t| t.name.clone())
    }

    /// The id of a topic, if it exists.
    pub fn topic_id_of(&self, name: &str) -> Option<[u8; 16]> {
        self.metadata()
            .topics
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.topic_id)
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
