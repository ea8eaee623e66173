//! Topic metadata: names, partition counts, owning shards, per-topic settings and the
//! producer-id blocks handed out, persisted as one rkyv file (`DATA/metadata.spate`, in the
//! engine's atomic-file envelope) replaced atomically on every change. Cluster state, not log
//! state: it lives with the topic controller (`topic_controller.rs`, on shard 0), which is
//! the one writer; the engine is told which partitions to open and with which settings.
//!
//! Loaded once at start, before the shards; changed rarely (create, delete, alter). A file
//! that fails its checks stops the broker with a message saying so: starting empty instead
//! would orphan the data of every topic.

use std::path::{Path, PathBuf};

use rkyv::{Archive, Deserialize, Serialize};

use spate_engine::atomic_file;
use spate_engine::space::DiskSpace;
use spate_engine::{EngineError, Result};

use crate::placement;

pub const METADATA_FILE: &str = "metadata.spate";

/// A topic's dynamic configs (Kafka's DYNAMIC_TOPIC_CONFIG): the keys set on the topic, by
/// name, each value checked and normalised by `topic_configs` before it is stored. A key not
/// here takes the broker's value or Kafka's default.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicConfigs {
    /// Sorted by name, one entry per name.
    entries: Vec<ConfigOverride>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ConfigOverride {
    pub name: String,
    pub value: String,
}

impl TopicConfigs {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| self.entries[i].value.as_str())
    }

    pub fn set(&mut self, name: &str, value: String) {
        match self.entries.binary_search_by(|e| e.name.as_str().cmp(name)) {
            Ok(i) => self.entries[i].value = value,
            Err(i) => self.entries.insert(
                i,
                ConfigOverride {
                    name: name.to_string(),
                    value,
                },
            ),
        }
    }

    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.entries.binary_search_by(|e| e.name.as_str().cmp(name)) {
            self.entries.remove(i);
        }
    }

    /// (name, value) in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// From (name, value) pairs, the last of a repeated name winning.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, String)>) -> Self {
        let mut c = Self::default();
        for (k, v) in pairs {
            c.set(k, v);
        }
        c
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    /// Kafka's topic id: a random (version 4) UUID given at creation, so a topic deleted and
    /// created again under the same name is another topic to clients that track ids. Topics
    /// of a format-1 file get theirs at the first open that reads it (saved at once).
    pub topic_id: [u8; 16],
    /// Owning shard of each partition, recorded at creation.
    pub partition_shards: Vec<u32>,
    pub config: TopicConfigs,
}

impl TopicMeta {
    pub fn partitions(&self) -> u32 {
        self.partition_shards.len() as u32
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub topics: Vec<TopicMeta>,
    /// Producer ids below this may have been handed out (allocated in blocks).
    pub producer_id_block_end: i64,
}

/// What starts a metadata file of format 2 and later: this magic, then the format version
/// (u32, little-endian), then the rkyv archive. A format-1 file (before topic configs were a
/// map) is the bare archive of [`v1::Metadata`]; it cannot start with these bytes (its first
/// bytes are a topic name of `[a-zA-Z0-9._-]`, shard numbers, or the root of an empty list).
const FORMAT_MAGIC: &[u8; 4] = b"SPMD";
/// The format this broker writes.
pub const FORMAT_VERSION: u32 = 2;

/// The metadata as format 1 had it: four typed settings per topic. Read, never written;
/// converted to [`TopicConfigs`] on load (and saved in the current format at the next
/// change).
pub mod v1 {
    use rkyv::{Archive, Deserialize, Serialize};

    #[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
    pub struct TopicConfig {
        pub retention_bytes: Option<i64>,
        pub retention_ms: Option<i64>,
        pub segment_bytes: Option<u64>,
        pub segment_ms: Option<u64>,
    }

    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
    pub struct TopicMeta {
        pub name: String,
        pub partition_shards: Vec<u32>,
        pub config: TopicConfig,
    }

    #[derive(Archive, Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
    pub struct Metadata {
        pub topics: Vec<TopicMeta>,
        pub producer_id_block_end: i64,
    }

    impl From<Metadata> for super::Metadata {
        fn from(old: Metadata) -> Self {
            let topics = old
                .topics
                .into_iter()
                .map(|t| {
                    let c = &t.config;
                    let pairs = [
                        ("retention.bytes", c.retention_bytes.map(|v| v.to_string())),
                        ("retention.ms", c.retention_ms.map(|v| v.to_string())),
                        ("segment.bytes", c.segment_bytes.map(|v| v.to_string())),
                        ("segment.ms", c.segment_ms.map(|v| v.to_string())),
                    ];
                    super::TopicMeta {
                        config: super::TopicConfigs::from_pairs(
                            pairs.into_iter().filter_map(|(k, v)| Some((k, v?))),
                        ),
                        name: t.name,
                        // Given by `MetadataStore::open`, which saves them.
                        topic_id: [0; 16],
                        partition_shards: t.partition_shards,
                    }
                })
                .collect();
            super::Metadata {
                topics,
                producer_id_block_end: old.producer_id_block_end,
            }
        }
    }
}

/// The bytes of a metadata file's payload: magic, format version, archive.
pub fn encode(metadata: &Metadata) -> Result<Vec<u8>> {
    let archive = rkyv::to_bytes::<rkyv::rancor::Error>(metadata)
        .map_err(|e| EngineError::Metadata(e.to_string()))?;
    let mut out = Vec::with_capacity(8 + archive.len());
    out.extend_from_slice(FORMAT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&archive);
    Ok(out)
}

/// A metadata file's payload, of any format this broker reads (1 and 2).
pub fn decode(payload: &[u8]) -> Result<Metadata, String> {
    let mut aligned = rkyv::util::AlignedVec::<16>::new();
    let versioned = payload
        .strip_prefix(FORMAT_MAGIC)
        .and_then(|rest| rest.split_first_chunk::<4>())
        .map(|(v, archive)| (u32::from_le_bytes(*v), archive));
    if let Some((FORMAT_VERSION, archive)) = versioned {
        aligned.extend_from_slice(archive);
        return rkyv::from_bytes::<Metadata, rkyv::rancor::Error>(&aligned)
            .map_err(|e| e.to_string());
    }
    // Format 1 (a first topic whose name starts with the magic looks versioned, but its
    // "version" is four name characters, never a small number).
    aligned.extend_from_slice(payload);
    match rkyv::from_bytes::<v1::Metadata, rkyv::rancor::Error>(&aligned) {
        Ok(old) => Ok(Metadata::from(old)),
        Err(e) => match versioned {
            Some((version, _)) if version < 0x0100_0000 => Err(format!(
                "format {version}, newer than this broker reads (up to {FORMAT_VERSION}): run the newer version"
            )),
            _ => Err(format!("format 1: {e}")),
        },
    }
}

/// Producer ids reserved per metadata write.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// The metadata file of a data directory.
pub struct MetadataStore {
    path: PathBuf,
    metadata: Metadata,
    next_producer_id: i64,
    /// On a full disk, saves fall back on its reserve (DeleteTopics and retention changes
    /// must work there: they are how space is freed).
    space: Option<std::sync::Arc<DiskSpace>>,
    /// A scratch copy (see [`MetadataStore::scratch`]): changes are made in memory only, and
    /// the caller saves the result with [`MetadataStore::save_job`].
    scratch: bool,
}

/// Checks a topic name as Kafka does: 1 to 249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(EngineError::InvalidTopic(format!(
            "{name:?}: a topic name is 1 to 249 characters of a-z A-Z 0-9 . _ - and not '.' or '..'"
        )))
    }
}

impl MetadataStore {
    /// Loads `data_dir/metadata.spate`, or starts empty if there is none.
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(METADATA_FILE);
        let metadata = match atomic_file::read_sync(&path).map_err(|e| {
            EngineError::Metadata(format!(
                "{e}; restore it from a backup, or move it aside to start with no topics"
            ))
        })? {
            None => Metadata::default(),
            Some(bytes) => decode(&bytes).map_err(|e| {
                EngineError::Metadata(format!("{} does not decode ({e}); restore it from a backup, or move it aside to start with no topics", path.display()))
            })?,
        };
        let next_producer_id = metadata.producer_id_block_end;
        let mut store = Self {
            path,
            metadata,
            next_producer_id,
            space: None,
            scratch: false,
        };
        // Topics without an id (read from a format-1 file) get one now, saved before anyone
        // sees it: an id must not change from one start to the next.
        let mut assigned = false;
        for t in store
            .metadata
            .topics
            .iter_mut()
            .filter(|t| t.topic_id == [0; 16])
        {
            t.topic_id = new_topic_id();
            assigned = true;
        }
        if assigned {
            store.save()?;
        }
        Ok(store)
    }

    /// A copy to make a change on without saving it: the store's methods run on it as on
    /// the store, then [`MetadataStore::save_job`] saves the result (off the shard's reactor:
    /// it writes, fsyncs and renames) and [`MetadataStore::install`] makes it current. What a
    /// method would have rolled back on a failed save is rolled back by not installing.
    pub fn scratch(&self) -> Self {
        Self {
            path: self.path.clone(),
            metadata: self.metadata.clone(),
            next_producer_id: self.next_producer_id,
            space: self.space.clone(),
            scratch: true,
        }
    }

    /// Saving this store's metadata as a job for a blocking thread (the encoding is done
    /// here, the file-system calls in the job).
    pub fn save_job(&self) -> Result<impl FnOnce() -> Result<()> + Send + 'static> {
        let bytes = encode(&self.metadata)?;
        let (path, space) = (self.path.clone(), self.space.clone());
        Ok(move || save_bytes(&path, &bytes, space.as_deref()))
    }

    /// Makes a saved scratch copy's metadata current.
    pub fn install(&mut self, saved: MetadataStore) {
        self.metadata = saved.metadata;
        self.next_producer_id = saved.next_producer_id;
    }

    /// Lets saves release the disk's space reserve when they hit a full disk.
    pub fn use_disk_space(&mut self, space: std::sync::Arc<DiskSpace>) {
        self.space = Some(space);
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn topic(&self, name: &str) -> Option<&TopicMeta> {
        self.metadata.topics.iter().find(|t| t.name == name)
    }

    fn save(&self) -> Result<()> {
        if self.scratch {
            return Ok(());
        }
        let bytes = encode(&self.metadata)?;
        save_bytes(&self.path, &bytes, self.space.as_deref())
    }

    /// Records a new topic, placing its partitions on `shards` shards, and persists it.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        config: TopicConfigs,
        shards: usize,
    ) -> Result<TopicMeta> {
        validate_topic_name(name)?;
        if partitions == 0 || partitions > 100_000 {
            return Err(EngineError::InvalidTopic(format!(
                "{name}: partition count must be between 1 and 100000, got {partitions}"
            )));
        }
        if self.topic(name).is_some() {
            return Err(EngineError::TopicExists(name.to_string()));
        }
        let topic = TopicMeta {
            name: name.to_string(),
            topic_id: new_topic_id(),
            partition_shards: (0..partitions)
                .map(|p| placement::shard_for(name, p, shards) as u32)
                .collect(),
            config,
        };
        self.metadata.topics.push(topic.clone());
        if let Err(e) = self.save() {
            self.metadata.topics.pop();
            return Err(e);
        }
        Ok(topic)
    }

    /// Records a topic as the cluster's metadata gives it (its id, partitions and shards
    /// decided by the controller), replacing the one of that name, and persists.
    pub fn put_topic(&mut self, topic: TopicMeta) -> Result<()> {
        let old = self.metadata.topics.clone();
        match self
            .metadata
            .topics
            .iter_mut()
            .find(|t| t.name == topic.name)
        {
            Some(t) => *t = topic,
            None => self.metadata.topics.push(topic),
        }
        if let Err(e) = self.save() {
            self.metadata.topics = old;
            return Err(e);
        }
        Ok(())
    }

    /// Grows a topic to `total` partitions (never shrinks) and persists.
    pub fn add_partitions(&mut self, name: &str, total: u32, shards: usize) -> Result<TopicMeta> {
        let topic = self
            .metadata
            .topics
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| EngineError::UnknownPartition(name.to_string()))?;
        let now = topic.partitions();
        if total <= now || total > 100_000 {
            return Err(EngineError::InvalidTopic(format!(
                "{name}: has {now} partitions; the new count must be more than that and at most 100000, got {total}"
            )));
        }
        let old = topic.partition_shards.clone();
        topic
            .partition_shards
            .extend((now..total).map(|p| placement::shard_for(name, p, shards) as u32));
        let updated = topic.clone();
        if let Err(e) = self.save() {
            if let Some(t) = self.metadata.topics.iter_mut().find(|t| t.name == name) {
                t.partition_shards = old;
            }
            return Err(e);
        }
        Ok(updated)
    }

    /// Hands out a producer id that was never handed out before, even across restarts.
    pub fn next_producer_id(&mut self) -> Result<i64> {
        if self.next_producer_id >= self.metadata.producer_id_block_end {
            self.metadata.producer_id_block_end = self.next_producer_id + PRODUCER_ID_BLOCK;
            self.save()?;
        }
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        Ok(id)
    }

    /// Forgets a topic (its files are removed by the caller) and persists.
    pub fn delete_topic(&mut self, name: &str) -> Result<TopicMeta> {
        let idx = self
            .metadata
            .topics
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| EngineError::UnknownPartition(name.to_string()))?;
        let removed = self.metadata.topics.remove(idx);
        if let Err(e) = self.save() {
            self.metadata.topics.insert(idx, removed);
            return Err(e);
        }
        Ok(removed)
    }

    /// Replaces a topic's settings and persists.
    pub fn set_topic_config(&mut self, name: &str, config: TopicConfigs) -> Result<()> {
        let topic = self
            .metadata
            .topics
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| EngineError::UnknownPartition(name.to_string()))?;
        let old = std::mem::replace(&mut topic.config, config);
        if let Err(e) = self.save() {
            if let Some(t) = self.metadata.topics.iter_mut().find(|t| t.name == name) {
                t.config = old;
            }
            return Err(e);
        }
        Ok(())
    }

    /// Moves partitions whose recorded shard no longer exists (fewer cores than before) to
    /// the shard the placement function gives, and persists if anything moved.
    pub fn fit_to_shards(&mut self, shards: usize) -> Result<usize> {
        let mut moved = 0;
        for t in &mut self.metadata.topics {
            for (p, shard) in t.partition_shards.iter_mut().enumerate() {
                if *shard as usize >= shards {
                    *shard = placement::shard_for(&t.name, p as u32, shards) as u32;
                    moved += 1;
                }
            }
        }
        if moved > 0 {
            self.save()?;
        }
        Ok(moved)
    }
}

/// Writes the encoded metadata atomically, falling back on the disk's reserve when full.
fn save_bytes(path: &Path, bytes: &[u8], space: Option<&DiskSpace>) -> Result<()> {
    atomic_file::write_sync_reserved(path, bytes, space).map_err(|e| {
        if e.is_disk_full() {
            EngineError::DiskFull {
                path: path.to_path_buf(),
                detail: format!("the topic metadata could not be saved: {e}"),
            }
        } else {
            EngineError::Metadata(e.to_string())
        }
    })
}

/// The configs of `__consumer_offsets`: never cut by retention (committed offsets must
/// outlive any age or size limit), compacted by the shard's log cleaner.
pub fn offsets_topic_configs(segment_bytes: u64) -> TopicConfigs {
    TopicConfigs::from_pairs([
        ("cleanup.policy", "compact".to_string()),
        ("retention.ms", "-1".to_string()),
        ("retention.bytes", "-1".to_string()),
        ("segment.bytes", segment_bytes.to_string()),
    ])
}

/// A random version-4 UUID (RFC 9562) from the kernel's generator; if that cannot be read,
/// one made of the time, the process id and a counter (unique, not unpredictable).
pub fn new_topic_id() -> [u8; 16] {
    use std::io::Read;
    let mut id = [0u8; 16];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut id));
    if read.is_err() || id == [0; 16] {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        id[..8].copy_from_slice(&nanos.to_le_bytes());
        id[8..12].copy_from_slice(&std::process::id().to_le_bytes());
        id[12..].copy_from_slice(&(n as u32).to_le_bytes());
    }
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_change_reaches_the_file_only_through_its_save_job() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path()).unwrap();
        store
            .create_topic("kept", 1, TopicConfigs::default(), 1)
            .unwrap();
        let mut scratch = store.scratch();
        scratch
            .create_topic("new", 2, TopicConfigs::default(), 1)
            .unwrap();
        scratch.delete_topic("kept").unwrap();
        // Nothing saved, nothing current: the file and the store still say "kept" only.
        let names = |s: &MetadataStore| -> Vec<String> {
            s.metadata().topics.iter().map(|t| t.name.clone()).collect()
        };
        assert_eq!(names(&store), ["kept"]);
        assert_eq!(names(&MetadataStore::open(dir.path()).unwrap()), ["kept"]);
        // Saved (as a shard does, on a blocking thread) and installed.
        (scratch.save_job().unwrap())().unwrap();
        store.install(scratch);
        assert_eq!(names(&store), ["new"]);
        assert_eq!(names(&MetadataStore::open(dir.path()).unwrap()), ["new"]);
        // Producer ids handed out by a scratch copy stay handed out.
        let mut scratch = store.scratch();
        let id = scratch.next_producer_id().unwrap();
        (scratch.save_job().unwrap())().unwrap();
        store.install(scratch);
        assert!(store.next_producer_id().unwrap() > id);
        let mut reopened = MetadataStore::open(dir.path()).unwrap();
        assert!(reopened.next_producer_id().unwrap() > id);
    }

    #[test]
    fn persists_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path()).unwrap();
        let cfg = TopicConfigs::from_pairs([("retention.bytes", "1073741824".to_string())]);
        store.create_topic("orders", 4, cfg.clone(), 2).unwrap();
        assert!(matches!(
            store.create_topic("orders", 1, TopicConfigs::default(), 2),
            Err(EngineError::TopicExists(_))
        ));
        assert!(store
            .create_topic("bad/name", 1, TopicConfigs::default(), 2)
            .is_err());
        assert!(store
            .create_topic("zero", 0, TopicConfigs::default(), 2)
            .is_err());
        let reloaded = MetadataStore::open(dir.path()).unwrap();
        let t = reloaded.topic("orders").unwrap();
        assert_eq!(t.partitions(), 4);
        assert_eq!(t.config, cfg);
        assert!(t.partition_shards.iter().all(|s| *s < 2));
    }

    /// A file written by a broker of format 1 (the four typed settings) loads, with its
    /// settings as configs, and is written back in the current format at the next change.
    #[test]
    fn topics_get_distinct_version_4_ids_that_a_restart_keeps_and_a_new_topic_does_not_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path()).unwrap();
        let a = store
            .create_topic("a", 1, TopicConfigs::default(), 1)
            .unwrap();
        let b = store
            .create_topic("b", 1, TopicConfigs::default(), 1)
            .unwrap();
        assert_ne!(a.topic_id, [0; 16]);
        assert_ne!(a.topic_id, b.topic_id);
        assert_eq!(a.topic_id[6] >> 4, 4, "a version-4 UUID");
        assert_eq!(a.topic_id[8] >> 6, 0b10, "RFC 9562's variant");
        let again = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(again.topic("a").unwrap().topic_id, a.topic_id);
        store.delete_topic("a").unwrap();
        let a2 = store
            .create_topic("a", 1, TopicConfigs::default(), 1)
            .unwrap();
        assert_ne!(
            a2.topic_id, a.topic_id,
            "a topic created again is another topic"
        );
    }

    #[test]
    fn a_format_1_file_is_read_and_rewritten_in_the_current_format() {
        let dir = tempfile::tempdir().unwrap();
        let old = v1::Metadata {
            topics: vec![v1::TopicMeta {
                name: "orders".into(),
                partition_shards: vec![0, 1],
                config: v1::TopicConfig {
                    retention_ms: Some(3_600_000),
                    segment_bytes: Some(1 << 20),
                    ..Default::default()
                },
            }],
            producer_id_block_end: 3000,
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&old).unwrap();
        atomic_file::write_sync_reserved(&dir.path().join(METADATA_FILE), &bytes, None).unwrap();
        let mut store = MetadataStore::open(dir.path()).unwrap();
        let t = store.topic("orders").unwrap();
        assert_eq!(t.partition_shards, [0, 1]);
        // An id given at this first open, and saved at once: an open that changes nothing
        // else sees the same.
        assert_ne!(t.topic_id, [0; 16]);
        let id = t.topic_id;
        assert_eq!(
            MetadataStore::open(dir.path())
                .unwrap()
                .topic("orders")
                .unwrap()
                .topic_id,
            id
        );
        let t = store.topic("orders").unwrap();
        let pairs: Vec<(&str, &str)> = t.config.iter().collect();
        assert_eq!(
            pairs,
            [("retention.ms", "3600000"), ("segment.bytes", "1048576")]
        );
        assert!(store.next_producer_id().unwrap() >= 3000);
        let written = atomic_file::read_sync(&dir.path().join(METADATA_FILE))
            .unwrap()
            .unwrap();
        assert!(written.starts_with(FORMAT_MAGIC));
        let again = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(again.metadata(), store.metadata());
        // A newer format than this broker knows is refused with a message, not misread.
        let mut newer = written.to_vec();
        newer[4..8].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        assert!(decode(&newer).unwrap_err().contains("newer"));
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path()).unwrap();
        store
            .create_topic("a", 1, TopicConfigs::default(), 1)
            .unwrap();
        let path = dir.path().join(METADATA_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x55;
        std::fs::write(&path, &bytes).unwrap();
        let err = MetadataStore::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains("corrupt") && err.contains("move it aside"),
            "{err}"
        );
        std::fs::write(&path, b"").unwrap();
        assert!(MetadataStore::open(dir.path()).is_err());
    }

    #[test]
    fn partitions_grow_and_producer_ids_never_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path()).unwrap();
        store
            .create_topic("t", 2, TopicConfigs::default(), 2)
            .unwrap();
        assert!(store.add_partitions("t", 2, 2).is_err());
        assert!(store.add_partitions("nope", 3, 2).is_err());
        assert_eq!(store.add_partitions("t", 5, 2).unwrap().partitions(), 5);
        let a = store.next_producer_id().unwrap();
        let b = store.next_producer_id().unwrap();
        assert!(b > a);
        let mut reopened = MetadataStore::open(dir.path()).unwrap();
        assert_eq!(reopened.topic("t").unwrap().partitions(), 5);
        assert!(reopened.next_producer_id().unwrap() > b);
    }

    #[test]
    fn fewer_shards_moves_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = MetadataStore::open(dir.path()).unwrap();
        store
            .create_topic("t", 8, TopicConfigs::default(), 8)
            .unwrap();
        let moved = store.fit_to_shards(2).unwrap();
        assert!(moved > 0);
        assert!(MetadataStore::open(dir.path())
            .unwrap()
            .topic("t")
            .unwrap()
            .partition_shards
            .iter()
            .all(|s| *s < 2));
    }
}
