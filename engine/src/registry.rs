//! The partitions a shard owns: opened (with recovery) at start, looked up by the network
//! layer, retention applied on a timer, all closed cleanly at shutdown.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cache::BatchCache;
use crate::config::LogConfig;
use crate::error::Result;
use crate::io::Storage;
use crate::log::sync_group::{SyncGroup, SyncScope};
use crate::metadata::{partition_dir, Metadata};
use crate::space::DiskSpace;
use crate::{PartitionLog, RecoveryReport};

pub struct ShardLogs {
    shard_id: usize,
    data_dir: PathBuf,
    storage: Rc<dyn Storage>,
    cache: Rc<RefCell<BatchCache>>,
    config: LogConfig,
    partitions: RefCell<HashMap<(String, u32), PartitionLog>>,
    next_cache_key: std::cell::Cell<u64>,
    /// The group commit of partitions on the data directory's filesystem, when
    /// `log.sync_scope` resolves to "filesystem", with that filesystem's device.
    sync_group: Option<(SyncGroup, u64)>,
    /// The data disk's free space (the floor, preallocation, the reserve), if watched.
    space: Option<Arc<DiskSpace>>,
}

impl ShardLogs {
    pub fn new(
        shard_id: usize,
        data_dir: &Path,
        storage: Rc<dyn Storage>,
        config: LogConfig,
        cache_bytes: usize,
    ) -> Self {
        let sync_group = match config.sync_scope.resolve(data_dir).0 {
            SyncScope::Filesystem => device_of(data_dir).map(|dev| (SyncGroup::new(), dev)),
            SyncScope::File | SyncScope::Auto => None,
        };
        Self {
            sync_group,
            shard_id,
            data_dir: data_dir.to_path_buf(),
            storage,
            cache: Rc::new(RefCell::new(BatchCache::new(cache_bytes))),
            config,
            partitions: RefCell::new(HashMap::new()),
            next_cache_key: std::cell::Cell::new(0),
            space: None,
        }
    }

    /// Partitions opened from now on watch the data disk's free space (see `crate::space`).
    pub fn with_disk_space(mut self, space: Arc<DiskSpace>) -> Self {
        self.space = Some(space);
        self
    }

    pub fn disk_space(&self) -> Option<&Arc<DiskSpace>> {
        self.space.as_ref()
    }

    pub fn shard_id(&self) -> usize {
        self.shard_id
    }

    /// The shard's group commit, if its partitions sync their filesystem together.
    pub fn sync_group(&self) -> Option<&SyncGroup> {
        self.sync_group.as_ref().map(|(g, _)| g)
    }

    /// Opens every partition of `metadata` placed on this shard, recovering each.
    pub async fn open_assigned(&self, metadata: &Metadata) -> Result<Vec<RecoveryReport>> {
        let mut reports = Vec::new();
        for topic in &metadata.topics {
            let config = topic.config.apply(&self.config);
            for (p, shard) in topic.partition_shards.iter().enumerate() {
                if *shard as usize == self.shard_id {
                    reports.push(
                        self.open_partition(&topic.name, p as u32, config.clone())
                            .await?,
                    );
                }
            }
        }
        Ok(reports)
    }

    pub async fn open_partition(
        &self,
        topic: &str,
        partition: u32,
        config: LogConfig,
    ) -> Result<RecoveryReport> {
        let key = self.next_cache_key.get();
        self.next_cache_key.set(key + 1);
        let dir = partition_dir(&self.data_dir, topic, partition);
        let name = format!("{topic}-{partition}");
        let (log, report) = PartitionLog::open(
            self.storage.clone(),
            &dir,
            &name,
            config,
            self.cache.clone(),
            key,
        )
        .await?;
        if let Some(space) = &self.space {
            log.use_disk_space(space.clone());
        }
        if let Some((group, dev)) = &self.sync_group {
            // A partition directory mounted elsewhere keeps fdatasyncs of its own.
            if device_of(&dir) == Some(*dev) {
                log.use_sync_group(group.clone());
            }
        }
        self.partitions
            .borrow_mut()
            .insert((topic.to_string(), partition), log);
        Ok(report)
    }

    pub fn get(&self, topic: &str, partition: u32) -> Option<PartitionLog> {
        self.partitions
            .borrow()
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Closes and forgets every partition of `topic` (its files are removed by the caller).
    pub async fn remove_topic(&self, topic: &str) {
        let logs: Vec<PartitionLog> = {
            let mut parts = self.partitions.borrow_mut();
            let keys: Vec<(String, u32)> =
                parts.keys().filter(|(t, _)| t == topic).cloned().collect();
            keys.into_iter().filter_map(|k| parts.remove(&k)).collect()
        };
        for log in logs {
            log.close_for_removal().await;
            log.drop_cached();
        }
    }

    pub fn len(&self) -> usize {
        self.partitions.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies retention to every partition once.
    pub async fn apply_retention(&self) {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let logs: Vec<PartitionLog> = self.partitions.borrow().values().cloned().collect();
        for log in logs {
            if let Err(e) = log.apply_retention(now_ms).await {
                tracing::warn!(partition = log.name(), "retention failed: {e}");
            }
        }
    }

    /// Runs retention every `retention_check_ms` until the returned task is dropped.
    pub fn retention_interval(&self) -> Duration {
        Duration::from_millis(self.config.retention_check_ms)
    }

    /// Closes every partition (flush, sync, checkpoint). Returns how many failed to close.
    pub async fn close_all(&self) -> usize {
        let logs: Vec<PartitionLog> = self
            .partitions
            .borrow_mut()
            .drain()
            .map(|(_, l)| l)
            .collect();
        let mut failed = 0;
        for log in logs {
            if let Err(e) = log.close().await {
                tracing::error!(partition = log.name(), "close failed: {e}");
                failed += 1;
            }
        }
        failed
    }
}

/// The device a path is on.
fn device_of(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.dev())
}
