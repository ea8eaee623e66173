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
