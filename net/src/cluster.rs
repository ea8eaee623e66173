//! What the shards share: `Cluster` is the one `Send + Sync` object of the network layer: the
//! settings and a snapshot of topic metadata (replaced whole on change, read without waiting on
//! any shard). Each shard's own state is `Shard` (`shard.rs`), which holds this and its end of
//! the shard mesh; `Cluster` knows nothing of `Shard`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::metadata::{Metadata, MetadataStore, TopicMeta};
use spate_engine::LogConfig;

use crate::config::NetConfig;

pub struct Cluster {
    pub config: NetConfig,
    pub cluster_id: String,
    pub data_dir: PathBuf,
    pub log_defaults: LogConfig,
    pub(crate) shard_count: usize,
    metadata: RwLock<Arc<Metadata>>,
    /// The metadata file, owned by shard 0 once it starts.
    pub(crate) store: Mutex<Option<MetadataStore>>,
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

    pub(crate) fn publish(&self, m: Metadata) {
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
