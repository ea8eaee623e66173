//! The partitions a shard owns: opened (with recovery) at start, looked up by the network
//! layer, retention applied on a timer, all closed cleanly at shutdown. Also where the data
//! directory's layout is decided (`topics/{topic}/{partition}/`): no other crate builds
//! those paths, they ask [`topic_dir`] and [`partition_dir`].
//!
//! Which partitions a shard owns is not decided here: the caller (the network layer, which
//! holds the topic metadata) names them, each with its settings.

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
use crate::space::DiskSpace;
use crate::{PartitionLog, RecoveryReport};

/// How often the tier's upload and remote-read rates are logged (when it moved anything).
const TRAFFIC_LOG_EVERY: Duration = Duration::from_secs(60);

/// The directory of a topic's partitions.
pub fn topic_dir(data_dir: &Path, topic: &str) -> PathBuf {
    data_dir.join("topics").join(topic)
}

/// The directory of a partition's log.
pub fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    topic_dir(data_dir, topic).join(partition.to_string())
}

/// Removes a deleted topic's files (every partition's directory). Blocking, and possibly
/// thousands of files: run it off a shard's reactor. A topic with no files is not an error.
pub fn remove_topic_files(data_dir: &Path, topic: &str) -> std::io::Result<()> {
    match std::fs::remove_dir_all(topic_dir(data_dir, topic)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes one partition's directory (a replica this broker no longer holds). Blocking: run
/// it off a shard's reactor. A partition with no files is not an error.
pub fn remove_partition_files(data_dir: &Path, topic: &str, partition: u32) -> std::io::Result<()> {
    match std::fs::remove_dir_all(partition_dir(data_dir, topic, partition)) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// A partition to open, as the owner of the placement names it: topic, partition and the
/// settings of its log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignedPartition {
    pub topic: String,
    pub partition: u32,
    pub config: LogConfig,
}

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
    /// The cold tier of partitions whose config asks for one.
    tier: Option<crate::tier::Tier>,
    /// Whether replication decides which replica writes the tier (else every log does).
    tier_replicated: bool,
    /// The keys of the payloads, for compaction (none: compacted partitions are not cleaned).
    record_keys: RefCell<Option<Rc<dyn crate::compaction::RecordKeys>>>,
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
            tier: None,
            tier_replicated: false,
            record_keys: RefCell::new(None),
        }
    }

    /// Lets the shard's cleaner read the keys of the payloads (the owner's format).
    pub fn use_record_keys(&self, keys: Rc<dyn crate::compaction::RecordKeys>) {
        *self.record_keys.borrow_mut() = Some(keys);
    }

    /// The shard's cleaner, once: cleans the dirtiest partition that is due (its dirty ratio
    /// at least its `min.cleanable.dirty.ratio`, or dirty for longer than
    /// `max.compaction.lag.ms`). Returns what it did, if it cleaned one.
    pub async fn clean_pass(&self) -> Option<(String, crate::compaction::CleanReport)> {
        let keys = self.record_keys.borrow().clone()?;
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let logs: Vec<PartitionLog> = self.partitions.borrow().values().cloned().collect();
        let dirtiest = logs
            .into_iter()
            .filter(|l| l.needs_cleaning(now_ms))
            .max_by_key(|l| l.dirty_state(now_ms).map_or(0, |d| d.dirty_ppm()))?;
        let cleaner = self.config.cleaner;
        let mut throttle =
            crate::compaction::throttle::Throttle::new(cleaner.io_max_bytes_per_second);
        match dirtiest
            .clean(&*keys, &cleaner, now_ms, &mut throttle)
            .await
        {
            Ok(Some(report)) => Some((dirtiest.name().to_string(), report)),
            Ok(None) => None,
            Err(e) => {
                crate::warn_limited!(
                    "cleaner failed",
                    partition = dirtiest.name(),
                    "compaction failed (the log is as it was; this partition is retried in 10 minutes): {e}"
                );
                None
            }
        }
    }

    /// How long the cleaner waits when no partition needed cleaning.
    pub fn cleaner_backoff(&self) -> Duration {
        Duration::from_millis(self.config.cleaner.backoff_ms.max(1))
    }

    /// Partitions opened from now on watch the data disk's free space (see `crate::space`).
    pub fn with_disk_space(mut self, space: Arc<DiskSpace>) -> Self {
        self.space = Some(space);
        self
    }

    /// Gives partitions with `remote_storage` in their config this cold tier; each log is
    /// the tier's writer for its partition (a single broker).
    pub fn with_tier(mut self, tier: crate::tier::Tier) -> Self {
        self.tier = Some(tier);
        self
    }

    /// The same, on a cluster: a log reads the tier until replication makes it its
    /// partition's leader ([`PartitionLog::set_tier_role`]).
    pub fn with_replicated_tier(mut self, tier: crate::tier::Tier) -> Self {
        self.tier = Some(tier);
        self.tier_replicated = true;
        self
    }

    fn attach_tier(&self, log: &PartitionLog, tier: &crate::tier::Tier) {
        log.attach_tier(tier.clone());
        if !self.tier_replicated {
            log.set_tier_role(crate::TierRole::Leader { epoch: 0 });
        }
    }

    pub fn tier(&self) -> Option<&crate::tier::Tier> {
        self.tier.as_ref()
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

    /// The broker-wide log settings partitions start from (a topic's overrides are applied
    /// by the caller).
    pub fn default_config(&self) -> &LogConfig {
        &self.config
    }

    /// Opens each of `partitions` (the ones the caller has placed on this shard), recovering
    /// each, in order; stops at the first that fails.
    pub async fn open_assigned(
        &self,
        partitions: impl IntoIterator<Item = AssignedPartition>,
    ) -> Result<Vec<RecoveryReport>> {
        let mut reports = Vec::new();
        for p in partitions {
            reports.push(self.open_partition(&p.topic, p.partition, p.config).await?);
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
        if let Some(tier) = &self.tier {
            // A partition whose topic turned tiering off and that had not finished leaving
            // the tier gets it too: the next tier pass goes on with that.
            if log.config().remote_storage || log.has_manifest_copy().await {
                self.attach_tier(&log, tier);
            }
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
            if log.has_tier() {
                if let Err(e) = log.remove_remote().await {
                    tracing::warn!(
                        partition = log.name(),
                        "cannot remove the topic's objects from the cold tier: {e}"
                    );
                }
            }
        }
    }

    /// Closes and forgets one partition (its files are removed by the caller); false if it
    /// was not open.
    pub async fn remove_partition(&self, topic: &str, partition: u32) -> bool {
        let log = self
            .partitions
            .borrow_mut()
            .remove(&(topic.to_string(), partition));
        match log {
            Some(log) => {
                log.close_for_removal().await;
                log.drop_cached();
                true
            }
            None => false,
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

    /// One tier pass over every partition that uses the cold tier (a topic that has just
    /// turned `remote.storage.enable` on gets the tier first). Failures are logged at a
    /// bounded rate: the next pass retries.
    pub async fn tier_pass(&self) {
        let Some(tier) = &self.tier else { return };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let logs: Vec<PartitionLog> = self.partitions.borrow().values().cloned().collect();
        for log in logs {
            if !log.has_tier() {
                if !log.config().remote_storage {
                    continue;
                }
                self.attach_tier(&log, tier);
            }
            if !log.config().remote_storage {
                match log.leave_tier().await {
                    Ok(Some(removed)) => tracing::info!(
                        partition = log.name(),
                        removed,
                        "tiering turned off: the log starts at its local start, its objects are removed from the cold tier"
                    ),
                    Ok(None) => {}
                    Err(e) => crate::warn_limited!(
                        "leaving the tier failed",
                        partition = log.name(),
                        tier = tier.describe(),
                        "tiering was turned off but the partition's objects are not all removed yet (the next pass retries): {e}"
                    ),
                }
                continue;
            }
            match log.tier_pass(now_ms).await {
                Ok(p) if p != crate::TierProgress::default() => tracing::debug!(
                    partition = log.name(),
                    uploaded = p.uploaded,
                    deleted_local = p.deleted_local,
                    deleted_remote = p.deleted_remote,
                    "tier pass"
                ),
                Ok(_) => {}
                Err(e) => crate::warn_limited!(
                    "tier pass failed",
                    partition = log.name(),
                    tier = tier.describe(),
                    "tiering paused for this partition (uploads and deletions wait; the next pass retries): {e}"
                ),
            }
        }
        tier.log_traffic(TRAFFIC_LOG_EVERY);
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
