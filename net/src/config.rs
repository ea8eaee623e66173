//! The network layer's settings: the `[kafka]` part of the broker's configuration, with
//! Kafka's defaults where Kafka has the setting.

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
    /// Kafka's `default.replication.factor` (a cluster's auto-created topics, CreateTopics
    /// with factor -1).
    pub default_replication_factor: u32,
    /// How long a new consumer group waits for more members before its first assignment.
    pub group_initial_rebalance_delay_ms: u64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// Consumer protocol (KIP-848) groups: a member silent this long is fenced (Kafka's
    /// `group.consumer.session.timeout.ms`).
    pub group_consumer_session_timeout_ms: i32,
    /// How often consumer protocol members heartbeat (Kafka's
    /// `group.consumer.heartbeat.interval.ms`).
    pub group_consumer_heartbeat_interval_ms: i32,
    /// Partitions of `__consumer_offsets`, fixed when it is first created.
    pub offsets_topic_partitions: u32,
    /// Segment size of `__consumer_offsets` (`offsets.topic.segment.bytes`).
    pub offsets_segment_bytes: u64,
    /// Kafka's `message.max.bytes`: the default `max.message.bytes` of every topic.
    pub message_max_bytes: i32,
    /// Kafka's `min.insync.replicas`: the default of every topic's (stored; enforced once
    /// replication lands).
    pub min_insync_replicas: i32,
    /// The Kafka names of the broker settings the config file set (`log.retention.ms`, ...):
    /// DescribeConfigs shows them as STATIC_BROKER_CONFIG, the rest as DEFAULT_CONFIG.
    pub broker_keys_set: std::collections::BTreeSet<String>,
    /// The broker has a cold tier: topics may set `remote.storage.enable`.
    pub tiered: bool,
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
            default_replication_factor: 1,
            group_initial_rebalance_delay_ms: 300,
            group_min_session_timeout_ms: 1000,
            group_max_session_timeout_ms: 300_000,
            // Kafka's defaults: 45 s and 5 s.
            group_consumer_session_timeout_ms: 45_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            offsets_topic_partitions: 4,
            offsets_segment_bytes: 64 * 1024 * 1024,
            // Kafka's default: 1 MiB plus a batch's 12-byte log overhead.
            message_max_bytes: 1_048_588,
            min_insync_replicas: 1,
            broker_keys_set: Default::default(),
            tiered: false,
        }
    }
}
