//! The broker's configuration: one TOML file, every key optional with a documented default
//! (docs/OPERATIONS.md), and command-line flags that override the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use spate_engine::config::{MinFreeBytes, StorageConfig};
use spate_engine::LogConfig;

/// Broker settings that Kafka has too: (TOML table, key, Kafka's name).
const KAFKA_NAMES: &[(&str, &str, &str)] = &[
    ("log", "retention_ms", "log.retention.ms"),
    ("log", "retention_bytes", "log.retention.bytes"),
    ("log", "segment_bytes", "log.segment.bytes"),
    ("log", "segment_ms", "log.roll.ms"),
    ("log", "index_interval_bytes", "log.index.interval.bytes"),
    ("log", "flush_interval_ms", "log.flush.interval.ms"),
    ("log", "segment_index_bytes", "log.index.size.max.bytes"),
    ("log", "file_delete_delay_ms", "log.segment.delete.delay.ms"),
    ("kafka", "message_max_bytes", "message.max.bytes"),
    ("kafka", "min_insync_replicas", "min.insync.replicas"),
    ("kafka", "default_partitions", "num.partitions"),
    (
        "kafka",
        "default_replication_factor",
        "default.replication.factor",
    ),
    ("kafka", "auto_create_topics", "auto.create.topics.enable"),
    ("kafka", "max_request_bytes", "socket.request.max.bytes"),
    ("kafka", "fetch_max_bytes", "fetch.max.bytes"),
    (
        "kafka",
        "offsets_topic_partitions",
        "offsets.topic.num.partitions",
    ),
    (
        "kafka",
        "group_consumer_session_timeout_ms",
        "group.consumer.session.timeout.ms",
    ),
    (
        "kafka",
        "group_consumer_heartbeat_interval_ms",
        "group.consumer.heartbeat.interval.ms",
    ),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Where topics, metadata and the lock file live.
    pub data_dir: PathBuf,
    /// Address every shard listens on (SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Number of shards (one per core); 0: every core this process may run on.
    pub shards: usize,
    /// Size of each shard's batch cache for tail reads.
    pub batch_cache_bytes: u64,
    pub log: LogConfig,
    pub kafka: KafkaConfig,
    pub storage: StorageConfig,
    pub cluster: ClusterConfig,
    pub tier: TierConfig,
    /// The Kafka names of the settings the config file set (see [`BrokerConfig::load`]).
    #[serde(skip)]
    pub kafka_keys_set: std::collections::BTreeSet<String>,
}

/// The cold tier (`[tier]`): closed segments of topics with `remote.storage.enable` go
/// there. `kind` unset: no tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TierConfig {
    /// "fs": a directory (typically on another, slower disk); "s3": an S3 bucket (or any
    /// S3-compatible store); "gcs": a Google Cloud Storage bucket; "azure": an Azure Blob
    /// Storage container; "" (the default): none.
    pub kind: String,
    /// The directory of an "fs" tier.
    pub path: Option<PathBuf>,
    /// The bucket of an "s3" or "gcs" tier, the container of an "azure" one.
    pub bucket: String,
    /// Keys go under this prefix of the bucket.
    pub prefix: String,
    /// Another endpoint than AWS's (MinIO, Ceph, a test server).
    pub endpoint: Option<String>,
    /// The bucket's region [default: AWS_REGION from the environment].
    pub region: Option<String>,
    /// Plain HTTP to the endpoint (a local test server only).
    pub allow_http: bool,
    /// Threads running the tier's calls (so many uploads and remote reads at once).
    pub threads: usize,
    /// How long one call may take, its retries included.
    pub timeout_ms: u64,
    /// Further attempts after a call fails in a way worth retrying.
    pub retries: u32,
    /// How often each shard uploads what is ready and applies retention to tiered topics.
    pub interval_ms: u64,
    /// Remote chunks kept on local disk for reads of the same cold range again (0: none).
    pub cache_bytes: u64,
    /// Where they are kept [default: DATA_DIR/tier-cache]; emptied at start.
    pub cache_dir: Option<PathBuf>,
}

impl Default for TierConfig {
    fn default() -> Self {
        Self {
            kind: String::new(),
            path: None,
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            allow_http: false,
            threads: 4,
            timeout_ms: 30_000,
            retries: 3,
            interval_ms: 1_000,
            cache_bytes: 1 << 30,
            cache_dir: None,
        }
    }
}

impl TierConfig {
    pub fn is_set(&self) -> bool {
        !self.kind.trim().is_empty()
    }

    /// What is wrong with the settings, if anything (the store is not touched).
    pub fn validate(&self) -> Result<(), String> {
        match self.kind.trim() {
            "" => return Ok(()),
            "fs" => {
                if self.path.as_ref().is_none_or(|p| p.as_os_str().is_empty()) {
                    return Err("tier.kind = \"fs\" needs tier.path, the tier's directory (or use --tier-dir DIR)".into());
                }
            }
            "s3" => {
                if self.bucket.trim().is_empty() {
                    return Err("tier.kind = \"s3\" needs tier.bucket, the bucket's name (credentials come from the environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)".into());
                }
            }
            "gcs" => {
                if self.bucket.trim().is_empty() {
                    return Err("tier.kind = \"gcs\" needs tier.bucket, the bucket's name (credentials come from the environment: GOOGLE_APPLICATION_CREDENTIALS, or the instance's service account)".into());
                }
            }
            "azure" => {
                if self.bucket.trim().is_empty() {
                    return Err("tier.kind = \"azure\" needs tier.bucket, the container's name (the account and credentials come from the environment: AZURE_STORAGE_ACCOUNT_NAME, AZURE_STORAGE_ACCOUNT_KEY, ...)".into());
                }
            }
            other => {
                return Err(format!(
                    "tier.kind = {other:?} is not a tier Spate has: use \"fs\" (a directory, tier.path), or \"s3\", \"gcs\" or \"azure\" (tier.bucket)"
                ))
            }
        }
        if self.threads == 0 || self.timeout_ms == 0 || self.interval_ms == 0 {
            return Err(
                "tier.threads, tier.timeout_ms and tier.interval_ms must be at least 1".into(),
            );
        }
        Ok(())
    }

    /// Opens the tier, or `None` without one. An fs tier's directory is created and written
    /// once to check it; the chunk cache goes in `data_dir` unless `cache_dir` says elsewhere.
    pub fn open(&self, data_dir: &Path) -> Result<Option<spate_engine::tier::Tier>, String> {
        if !self.is_set() {
            return Ok(None);
        }
        self.validate()?;
        let cloud = match self.kind.trim() {
            "s3" => Some(spate_object_tier::Cloud::S3),
            "gcs" => Some(spate_object_tier::Cloud::Gcs),
            "azure" => Some(spate_object_tier::Cloud::Azure),
            _ => None,
        };
        let store: std::sync::Arc<dyn spate_engine::tier::ColdStore> = if let Some(cloud) = cloud {
            let s3 = spate_object_tier::ObjectTier::open(
                cloud,
                &spate_object_tier::S3Settings {
                    bucket: self.bucket.trim().to_string(),
                    prefix: self.prefix.clone(),
                    endpoint: self.endpoint.clone(),
                    region: self.region.clone(),
                    allow_http: self.allow_http,
                },
            )?;
            // An unreachable store does not stop the start: tiering waits for it.
            let wait = std::time::Duration::from_millis(self.timeout_ms.min(5_000));
            if let Err(e) = s3.probe(wait) {
                tracing::warn!(
                    tier = %spate_engine::tier::ColdStore::describe(&s3),
                    "the cold tier does not answer at start ({e}): tiering is paused until it does (uploads wait, nothing is deleted locally, remote reads are retriable errors)"
                );
            }
            std::sync::Arc::new(s3)
        } else {
            let path = self.path.clone().unwrap_or_default();
            std::sync::Arc::new(spate_engine::tier::fs::FsStore::open(&path).map_err(|e| {
                    format!(
                        "cannot use the cold tier directory {}: {e}; create it and make it writable, or fix tier.path",
                        path.display()
                    )
                })?)
        };
        let settings = spate_engine::tier::TierSettings {
            threads: self.threads,
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            retries: self.retries,
        };
        let cache = if self.cache_bytes > 0 {
            let dir = self
                .cache_dir
                .clone()
                .unwrap_or_else(|| data_dir.join("tier-cache"));
            Some(
                spate_engine::tier::cache::ChunkCache::open(&dir, self.cache_bytes).map_err(
                    |e| {
                        format!(
                            "cannot use {} for the cold tier's chunk cache: {e}; make it writable, set tier.cache_dir elsewhere, or tier.cache_bytes = 0 for none",
                            dir.display()
                        )
                    },
                )?,
            )
        } else {
            None
        };
        spate_engine::tier::Tier::start_with_cache(store, settings, cache)
            .map(Some)
            .map_err(|e| format!("cannot start the cold tier's threads: {e}"))
    }
}

/// Membership of a cluster (`[cluster]`): all unset, the broker is a single node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This broker's node id (Kafka's `node.id`).
    pub node_id: Option<i32>,
    /// Where it listens for the other brokers [default: its address in `voters`].
    pub listen: Option<SocketAddr>,
    /// The metadata quorum's voters, `ID@HOST:PORT,...` (Kafka's `controller.quorum.voters`).
    pub voters: String,
    /// Kafka's `broker.session.timeout.ms`: a broker silent this long is fenced.
    pub broker_session_timeout_ms: u64,
    /// Kafka's `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// Kafka's `replica.lag.time.max.ms`: an in-sync follower that has not caught up for
    /// this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// The replication listeners: shard s listens on this port plus s, at the host of
    /// `listen`; 0 (the default): ports the kernel picks, registered with the controller.
    pub replication_port: u16,
    /// A voter snapshots the cluster metadata after this many metadata log entries and lets
    /// go of the log before the snapshot (Kafka bounds it by bytes instead:
    /// `metadata.log.max.record.bytes.between.snapshots`).
    pub metadata_snapshot_entries: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: None,
            listen: None,
            voters: String::new(),
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            replica_lag_time_max_ms: 30_000,
            replication_port: 0,
            metadata_snapshot_entries: 4096,
        }
    }
}

impl ClusterConfig {
    /// Whether any cluster setting is given (then all that are needed must be).
    pub fn is_set(&self) -> bool {
        self.node_id.is_some() || self.listen.is_some() || !self.voters.trim().is_empty()
    }

    /// The cluster node's settings, or `None` on a single node; every missing or
    /// inconsistent piece is an error saying what to add.
    pub fn node_config(
        &self,
        data_dir: &Path,
        net: &spate_net::NetConfig,
        shards: usize,
        replication_ports: Vec<u16>,
    ) -> Result<Option<spate_replication::node::NodeConfig>, String> {
        if !self.is_set() {
            return Ok(None);
        }
        let voters = spate_replication::voters::parse(&self.voters)
            .map_err(|e| format!("--voters (cluster.voters): {e}"))?;
        let node_id = self.node_id.ok_or(
            "a cluster member needs its node id: add --node-id (cluster.node_id), one of the ids in --voters",
        )?;
        if node_id < 0 {
            return Err(format!("--node-id {node_id}: a node id is 0 or more"));
        }
        let listen = match self.listen {
            Some(l) => l,
            None => {
                let me = voters.iter().find(|v| v.id == node_id).ok_or_else(|| {
                    format!("node id {node_id} is not among the voters ({}): a broker that is not a voter (an observer) needs --cluster-listen (cluster.listen), the address the voters reach it at", self.voters)
                })?;
                std::net::ToSocketAddrs::to_socket_addrs(&(me.host.as_str(), me.port))
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| {
                        format!("cannot resolve {}, this node's address in --voters; give --cluster-listen", me.addr())
                    })?
            }
        };
        let config = spate_replication::node::NodeConfig {
            node_id,
            cluster_listen: listen,
            voters,
            data_dir: data_dir.to_path_buf(),
            advertised_host: net.advertised_host.clone(),
            advertised_port: net.advertised_port,
            shards: shards as u32,
            replication_ports,
            replica_lag_time_max_ms: self.replica_lag_time_max_ms,
            broker_session_timeout_ms: self.broker_session_timeout_ms,
            broker_heartbeat_interval_ms: self.broker_heartbeat_interval_ms,
            tick_ms: 100,
            metadata_snapshot_entries: self.metadata_snapshot_entries.max(16),
        };
        config.validate()?;
        Ok(Some(config))
    }
}

/// The Kafka protocol settings (`[kafka]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// "host:port" that Metadata gives clients; empty: the listen address.
    pub advertise: String,
    /// Largest request accepted; a bigger one closes the connection.
    pub max_request_bytes: u64,
    /// Most bytes of records one fetch answers, whatever it asks (Kafka's `fetch.max.bytes`).
    pub fetch_max_bytes: u64,
    /// Create a topic the first time a client asks for its metadata.
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic (and of CreateTopics without a count).
    pub default_partitions: u32,
    /// Kafka's `default.replication.factor`: replicas of an auto-created topic (and of
    /// CreateTopics without a factor) in a cluster.
    pub default_replication_factor: u32,
    /// How long a new consumer group waits for more members before assigning.
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: u32,
    pub group_max_session_timeout_ms: u32,
    /// Consumer protocol (KIP-848) groups: a member silent this long is fenced (Kafka's
    /// `group.consumer.session.timeout.ms`, 45 s).
    pub group_consumer_session_timeout_ms: u32,
    /// How often consumer protocol members heartbeat (Kafka's
    /// `group.consumer.heartbeat.interval.ms`, 5 s); less than the session timeout.
    pub group_consumer_heartbeat_interval_ms: u32,
    /// Partitions of `__consumer_offsets`; used only when it is first created.
    pub offsets_topic_partitions: u32,
    /// Segment size of `__consumer_offsets` (Kafka's `offsets.topic.segment.bytes`): a
    /// partition is compacted once it holds two closed segments. Used only when the topic is
    /// first created.
    pub offsets_segment_bytes: u64,
    /// Kafka's `message.max.bytes`: the largest record batch a topic takes unless its
    /// `max.message.bytes` says otherwise.
    pub message_max_bytes: u32,
    /// Kafka's `min.insync.replicas`: every topic's default (stored; enforced once
    /// replication lands).
    pub min_insync_replicas: u32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        let n = spate_net::NetConfig::default();
        Self {
            advertise: String::new(),
            max_request_bytes: n.max_request_bytes as u64,
            fetch_max_bytes: n.fetch_max_bytes as u64,
            auto_create_topics: n.auto_create_topics,
            default_partitions: n.default_partitions,
            default_replication_factor: n.default_replication_factor,
            group_initial_rebalance_delay_ms: n.group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms: n.group_min_session_timeout_ms as u32,
            group_max_session_timeout_ms: n.group_max_session_timeout_ms as u32,
            group_consumer_session_timeout_ms: n.group_consumer_session_timeout_ms as u32,
            group_consumer_heartbeat_interval_ms: n.group_consumer_heartbeat_interval_ms as u32,
            offsets_topic_partitions: n.offsets_topic_partitions,
            offsets_segment_bytes: 64 * 1024 * 1024,
            message_max_bytes: n.message_max_bytes as u32,
            min_insync_replicas: n.min_insync_replicas as u32,
        }
    }
}

impl KafkaConfig {
    /// The network settings, with the advertised address resolved against `listen`.
    pub fn net_config(&self, listen: SocketAddr) -> Result<spate_net::NetConfig, String> {
        let (host, port) = if self.advertise.is_empty() {
            (listen.ip().to_string(), listen.port())
        } else {
            let (h, p) = self.advertise.rsplit_once(':').ok_or_else(|| {
                format!("kafka.advertise = {:?} must be host:port", self.advertise)
            })?;
            let p: u16 = p.parse().map_err(|_| {
                format!(
                    "kafka.advertise = {:?}: {p:?} is not a port",
                    self.advertise
                )
            })?;
            (h.to_string(), p)
        };
        Ok(spate_net::NetConfig {
            advertised_host: host,
            advertised_port: port,
            max_request_bytes: self.max_request_bytes as usize,
            fetch_max_bytes: self.fetch_max_bytes as usize,
            auto_create_topics: self.auto_create_topics,
            default_partitions: self.default_partitions,
            default_replication_factor: self.default_replication_factor,
            group_initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            group_min_session_timeout_ms: self.group_min_session_timeout_ms.min(i32::MAX as u32)
                as i32,
            group_max_session_timeout_ms: self.group_max_session_timeout_ms.min(i32::MAX as u32)
                as i32,
            group_consumer_session_timeout_ms: self.group_consumer_session_timeout_ms as i32,
            group_consumer_heartbeat_interval_ms: self.group_consumer_heartbeat_interval_ms as i32,
            offsets_topic_partitions: self.offsets_topic_partitions,
            offsets_segment_bytes: self.offsets_segment_bytes,
            message_max_bytes: self.message_max_bytes.min(i32::MAX as u32) as i32,
            min_insync_replicas: self.min_insync_replicas.min(i32::MAX as u32) as i32,
            broker_keys_set: Default::default(),
            tiered: false,
        })
    }

    fn validate(&self) -> Result<(), String> {
        if self.max_request_bytes < 1024 || self.max_request_bytes > i32::MAX as u64 {
            return Err("kafka.max_request_bytes must be between 1024 and 2147483647".into());
        }
        if self.fetch_max_bytes < 1024 || self.fetch_max_bytes > i32::MAX as u64 {
            return Err(format!(
                "kafka.fetch_max_bytes = {} must be between 1024 and 2147483647",
                self.fetch_max_bytes
            ));
        }
        if self.default_partitions == 0 || self.offsets_topic_partitions == 0 {
            return Err(
                "kafka.default_partitions and kafka.offsets_topic_partitions must be at least 1"
                    .into(),
            );
        }
        if self.default_replication_factor == 0 || self.default_replication_factor > 32767 {
            return Err(format!(
                "kafka.default_replication_factor = {} must be between 1 and 32767",
                self.default_replication_factor
            ));
        }
        if !(64 * 1024..=u32::MAX as u64).contains(&self.offsets_segment_bytes) {
            return Err(format!(
                "kafka.offsets_segment_bytes = {} must be between 65536 and 4294967295",
                self.offsets_segment_bytes
            ));
        }
        if self.message_max_bytes > i32::MAX as u32 {
            return Err(format!(
                "kafka.message_max_bytes = {} must be at most 2147483647",
                self.message_max_bytes
            ));
        }
        if self.min_insync_replicas == 0 || self.min_insync_replicas > i32::MAX as u32 {
            return Err("kafka.min_insync_replicas must be between 1 and 2147483647".into());
        }
        if self.group_consumer_session_timeout_ms == 0
            || self.group_consumer_session_timeout_ms > i32::MAX as u32
        {
            return Err(format!(
                "kafka.group_consumer_session_timeout_ms = {} must be between 1 and 2147483647",
                self.group_consumer_session_timeout_ms
            ));
        }
        if self.group_consumer_heartbeat_interval_ms == 0
            || self.group_consumer_heartbeat_interval_ms >= self.group_consumer_session_timeout_ms
        {
            return Err(format!(
                "kafka.group_consumer_heartbeat_interval_ms = {} must be at least 1 and less than kafka.group_consumer_session_timeout_ms ({})",
                self.group_consumer_heartbeat_interval_ms, self.group_consumer_session_timeout_ms
            ));
        }
        if self.group_min_session_timeout_ms > self.group_max_session_timeout_ms {
            return Err("kafka.group_min_session_timeout_ms must not exceed kafka.group_max_session_timeout_ms".into());
        }
        Ok(())
    }
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./spate-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            shards: 0,
            batch_cache_bytes: 256 * 1024 * 1024,
            log: LogConfig::default(),
            kafka: KafkaConfig::default(),
            storage: StorageConfig::default(),
            cluster: ClusterConfig::default(),
            tier: TierConfig::default(),
            kafka_keys_set: Default::default(),
        }
    }
}

impl BrokerConfig {
    /// Reads a TOML file; unknown keys are errors that name the key.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        let mut config: Self =
            toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))?;
        config.kafka_keys_set = Self::kafka_keys_set(&text);
        Ok(config)
    }

    /// The Kafka names of the broker settings a config file's text sets (DescribeConfigs
    /// shows those as STATIC_BROKER_CONFIG).
    pub fn kafka_keys_set(text: &str) -> std::collections::BTreeSet<String> {
        let Ok(table) = text.parse::<toml::Table>() else {
            return Default::default();
        };
        KAFKA_NAMES
            .iter()
            .filter(|(section, key, _)| {
                table
                    .get(*section)
                    .and_then(|t| t.as_table())
                    .is_some_and(|t| t.contains_key(*key))
            })
            .map(|(_, _, kafka)| kafka.to_string())
            .collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        self.log.validate()?;
        self.kafka.validate()?;
        let net = self.kafka.net_config(self.listen)?;
        self.cluster
            .node_config(&self.data_dir, &net, 1, Vec::new())?;
        if self.batch_cache_bytes < 1024 * 1024 {
            return Err("batch_cache_bytes must be at least 1048576".into());
        }
        self.tier.validate()?;
        self.validate_storage()
    }

    /// A floor at or above the size of the data disk would refuse every produce: an error
    /// at start rather than a broker that takes nothing. (The data directory may not exist
    /// yet: its nearest existing parent is on the same disk.)
    fn validate_storage(&self) -> Result<(), String> {
        let MinFreeBytes::Bytes(min_free) = self.storage.min_free_bytes else {
            return Ok(());
        };
        let Some(existing) = self.data_dir.ancestors().find(|p| p.exists()) else {
            return Ok(());
        };
        let Ok((disk_bytes, _)) = spate_engine::space::statvfs(existing) else {
            return Ok(());
        };
        if min_free >= disk_bytes {
            return Err(format!(
                "storage.min_free_bytes = {min_free} is not below the size of the data disk of {} ({disk_bytes} bytes): every produce would be refused; use a smaller value, 0 (no floor) or \"auto\"",
                self.data_dir.display()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_engine::config::SyncScope;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: BrokerConfig = toml::from_str("").unwrap();
        assert_eq!(c, BrokerConfig::default());
        let c: BrokerConfig =
            toml::from_str("shards = 2\n[log]\nsegment_bytes = 1048576\n").unwrap();
        assert_eq!(c.shards, 2);
        assert_eq!(c.log.segment_bytes, 1 << 20);
        let err = toml::from_str::<BrokerConfig>("shardz = 2")
            .unwrap_err()
            .to_string();
        assert!(err.contains("shardz"), "{err}");
    }

    #[test]
    fn sync_scope_takes_its_three_values_and_names_them_on_a_typo() {
        for (text, scope) in [
            ("auto", SyncScope::Auto),
            ("filesystem", SyncScope::Filesystem),
            ("file", SyncScope::File),
        ] {
            let c: BrokerConfig =
                toml::from_str(&format!("[log]\nsync_scope = \"{text}\"\n")).unwrap();
            assert_eq!(c.log.sync_scope, scope);
        }
        let err = toml::from_str::<BrokerConfig>("[log]\nsync_scope = \"disk\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("disk") && err.contains("filesystem") && err.contains("file"),
            "{err}"
        );
    }

    #[test]
    fn offsets_segment_bytes_is_a_segment_size() {
        for (bytes, ok) in [(65_536u64, true), (65_535, false), (1 << 32, false)] {
            let text = format!("[kafka]\noffsets_segment_bytes = {bytes}\n");
            let c: BrokerConfig = toml::from_str(&text).unwrap();
            match c.validate() {
                Ok(()) => assert!(ok, "{bytes} accepted"),
                Err(e) => {
                    assert!(!ok, "{bytes}: {e}");
                    assert!(e.contains("kafka.offsets_segment_bytes"), "{e}");
                }
            }
        }
    }

    #[test]
    fn fetch_max_bytes_is_an_i32_of_at_least_a_kibibyte() {
        assert_eq!(KafkaConfig::default().fetch_max_bytes, 55 << 20);
        for (bytes, ok) in [(1024u64, true), (1023, false), (1 << 31, false)] {
            let text = format!("[kafka]\nfetch_max_bytes = {bytes}\n");
            let c: BrokerConfig = toml::from_str(&text).unwrap();
            match c.validate() {
                Ok(()) => assert!(ok, "{bytes} accepted"),
                Err(e) => {
                    assert!(!ok, "{bytes}: {e}");
                    assert!(e.contains("kafka.fetch_max_bytes"), "{e}");
                }
            }
        }
    }

    #[test]
    fn consumer_group_timeouts_have_kafkas_defaults_and_heartbeats_come_first() {
        let d = KafkaConfig::default();
        assert_eq!(
            (
                d.group_consumer_session_timeout_ms,
                d.group_consumer_heartbeat_interval_ms
            ),
            (45_000, 5_000)
        );
        for (session, heartbeat, ok) in [
            (45_000u32, 5_000u32, true),
            (1_000, 999, true),
            (1_000, 1_000, false),
            (0, 0, false),
            (10_000, 0, false),
        ] {
            let text = format!(
                "[kafka]\ngroup_consumer_session_timeout_ms = {session}\ngroup_consumer_heartbeat_interval_ms = {heartbeat}\n"
            );
            let c: BrokerConfig = toml::from_str(&text).unwrap();
            match c.validate() {
                Ok(()) => assert!(ok, "{session}/{heartbeat} accepted"),
                Err(e) => {
                    assert!(!ok, "{session}/{heartbeat}: {e}");
                    assert!(e.contains("kafka.group_consumer_"), "{e}");
                }
            }
        }
        let net = d.net_config("127.0.0.1:9092".parse().unwrap()).unwrap();
        assert_eq!(net.group_consumer_session_timeout_ms, 45_000);
        assert_eq!(net.group_consumer_heartbeat_interval_ms, 5_000);
    }

    #[test]
    fn min_free_bytes_is_auto_or_bytes_and_below_the_disk() {
        let c: BrokerConfig = toml::from_str("[storage]\nmin_free_bytes = \"auto\"\n").unwrap();
        assert_eq!(c.storage.min_free_bytes, MinFreeBytes::Auto);
        let c: BrokerConfig = toml::from_str("[storage]\nmin_free_bytes = 1048576\n").unwrap();
        assert_eq!(c.storage.min_free_bytes, MinFreeBytes::Bytes(1 << 20));
        assert!(c.validate().is_ok());
        for bad in ["-1", "\"lots\"", "1.5"] {
            let err =
                toml::from_str::<BrokerConfig>(&format!("[storage]\nmin_free_bytes = {bad}\n"))
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("auto"), "{bad}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let c = BrokerConfig {
            data_dir: dir.path().join("not-yet"),
            storage: StorageConfig {
                min_free_bytes: MinFreeBytes::Bytes(u64::MAX),
            },
            ..BrokerConfig::default()
        };
        let err = c.validate().unwrap_err();
        assert!(err.contains("storage.min_free_bytes"), "{err}");
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("../docs/OPERATIONS.md");
        let start = doc
            .find("```toml")
            .expect("OPERATIONS.md has a toml example")
            + 7;
        let end = start + doc[start..].find("```").unwrap();
        let c: BrokerConfig = toml::from_str(&doc[start..end]).expect("documented example parses");
        assert_eq!(
            c,
            BrokerConfig::default(),
            "the documented example lists the defaults"
        );
    }
}
