//! Every topic-level config of Kafka 4, as one table: name, type, default, the broker key it
//! inherits from (its synonym), validator, documentation, and what Spate does with it. The
//! admin handlers validate against it (CreateTopics, AlterConfigs, IncrementalAlterConfigs),
//! DescribeConfigs answers from it, and [`TopicSettings`] turns a topic's overrides into what
//! the produce path and the engine's `LogConfig` use.
//!
//! A topic stores only its overrides (`metadata::TopicConfigs`, name -> value, validated and
//! normalised here before they are stored); every other key takes the broker's value when
//! Spate's broker config has the synonym ([`BrokerDefaults`]), else Kafka's default.
//!
//! Taken from Kafka's `TopicConfig.java`, `LogConfig.java`, `ServerLogConfigs.java` and
//! `ServerTopicConfigSynonyms.java` (3.9), with Kafka 4.0's changes: `message.format.version`,
//! `message.downconversion.enable` and `message.timestamp.difference.max.ms` are gone (unknown
//! keys now), `message.timestamp.after.max.ms` defaults to one hour, and `segment.bytes` is at
//! least 1 MiB (KIP-1030).

use std::collections::BTreeSet;

use kafka_protocol::records::Compression;
use spate_engine::LogConfig;

use crate::metadata::{Metadata, TopicConfigs};
use spate_engine::AssignedPartition;

/// Kafka's config types (`ConfigDef.Type`), with the codes DescribeConfigs v3+ answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    Int,
    Long,
    Double,
    String,
    List,
    Class,
    Password,
}

impl ConfigType {
    /// `DescribeConfigsResponse.ConfigType`: 1 BOOLEAN, 2 STRING, 3 INT, 5 LONG, 6 DOUBLE,
    /// 7 LIST, 8 CLASS, 9 PASSWORD.
    pub fn code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
            ConfigType::Class => 8,
            ConfigType::Password => 9,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ConfigType::Boolean => "BOOLEAN",
            ConfigType::Int => "INT",
            ConfigType::Long => "LONG",
            ConfigType::Double => "DOUBLE",
            ConfigType::String => "STRING",
            ConfigType::List => "LIST",
            ConfigType::Class => "CLASS",
            ConfigType::Password => "PASSWORD",
        }
    }
}

/// What values a key accepts beyond its type (Kafka's validators).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Validator {
    Any,
    AtLeast(i64),
    Between(i64, i64),
    /// A double in [0, 1].
    Ratio,
    OneOf(&'static [&'static str]),
    /// A list whose every item is one of these.
    ListOf(&'static [&'static str]),
    /// -1 (the codec's default) or 1 to 9.
    GzipLevel,
    /// `*`, or a list of `partition:broker` pairs.
    ThrottledReplicas,
}

/// Whether Spate acts on a key, with how (or why not yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    Honoured(&'static str),
    /// Accepted, validated, persisted and described, not acted on.
    Stored(&'static str),
}

/// One topic config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    /// Kafka's default, as DescribeConfigs shows it.
    pub default: &'static str,
    /// The broker config it inherits from (Kafka's first synonym), if any.
    pub broker_key: Option<&'static str>,
    pub validator: Validator,
    pub doc: &'static str,
    /// Cannot be changed once the topic exists (AlterConfigs refuses it).
    pub read_only: bool,
    pub support: Support,
}

/// DescribeConfigs' config sources.
pub mod source {
    pub const DYNAMIC_TOPIC_CONFIG: i8 = 1;
    pub const STATIC_BROKER_CONFIG: i8 = 4;
    pub const DEFAULT_CONFIG: i8 = 5;
}

/// Kafka's `Long.MAX_VALUE` default: "never".
const NEVER: i64 = i64::MAX;
/// `flush.ms` above this is taken as this (a timer of `Long.MAX_VALUE` ms cannot be armed).
pub const FLUSH_MS_MAX: u64 = 365 * 24 * 3600 * 1000;

/// Every topic config of Kafka 4, by name.
pub static TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        ty: ConfigType::List,
        default: "delete",
        broker_key: Some("log.cleanup.policy"),
        validator: Validator::ListOf(&["compact", "delete"]),
        doc: "This config designates the retention policy to use on log segments. The \"delete\" policy (which is the default) will discard old segments when their retention time or size limit has been reached. The \"compact\" policy will enable log compaction, which retains the latest value for each key. It is also possible to specify both policies in a comma-separated list (e.g. \"delete,compact\"). In this case, old segments will be discarded per the retention time and size configuration, while retained segments will be compacted.",
        read_only: false,
        support: Support::Honoured("delete: retention removes whole segments; compact: the shard's cleaner keeps each key's last record (closed segments below the high watermark), records without a key are refused with INVALID_RECORD as in Kafka; compact,delete: both"),
    },
    ConfigDef {
        name: "compression.gzip.level",
        ty: ConfigType::Int,
        default: "-1",
        broker_key: Some("compression.gzip.level"),
        validator: Validator::GzipLevel,
        doc: "The compression level to use if compression.type is set to gzip.",
        read_only: false,
        support: Support::Stored("the broker recompresses at the codec's default level"),
    },
    ConfigDef {
        name: "compression.lz4.level",
        ty: ConfigType::Int,
        default: "9",
        broker_key: Some("compression.lz4.level"),
        validator: Validator::Between(1, 17),
        doc: "The compression level to use if compression.type is set to lz4.",
        read_only: false,
        support: Support::Stored("the broker recompresses at the codec's default level"),
    },
    ConfigDef {
        name: "compression.type",
        ty: ConfigType::String,
        default: "producer",
        broker_key: Some("compression.type"),
        validator: Validator::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        doc: "Specify the final compression type for a given topic. This configuration accepts the standard compression codecs ('gzip', 'snappy', 'lz4', 'zstd'). It additionally accepts 'uncompressed' which is equivalent to no compression; and 'producer' which means retain the original compression codec set by the producer.",
        read_only: false,
        support: Support::Honoured("producer keeps the batch as sent (zero-copy); a codec recompresses batches in another codec to it; uncompressed decompresses them"),
    },
    ConfigDef {
        name: "compression.zstd.level",
        ty: ConfigType::Int,
        default: "3",
        broker_key: Some("compression.zstd.level"),
        validator: Validator::Between(-131072, 22),
        doc: "The compression level to use if compression.type is set to zstd.",
        read_only: false,
        support: Support::Stored("the broker recompresses at the codec's default level"),
    },
    ConfigDef {
        name: "delete.retention.ms",
        ty: ConfigType::Long,
        default: "86400000",
        broker_key: Some("log.cleaner.delete.retention.ms"),
        validator: Validator::AtLeast(0),
        doc: "The amount of time to retain delete tombstone markers for log compacted topics. This setting also gives a bound on the time in which a consumer must complete a read if they begin from offset 0 to ensure that they get a valid snapshot of the final stage (otherwise delete tombstones may be collected before they complete their scan).",
        read_only: false,
        support: Support::Honoured("a tombstone goes at the first pass after its timestamp is this old (Kafka counts from the pass that first cleaned it)"),
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        ty: ConfigType::Long,
        default: "60000",
        broker_key: Some("log.segment.delete.delay.ms"),
        validator: Validator::AtLeast(0),
        doc: "The time to wait before deleting a file from the filesystem",
        read_only: false,
        support: Support::Honoured("a segment deleted by retention or DeleteRecords leaves the log at once; its files are renamed *.deleted and removed after the delay (the broker's default is log.file_delete_delay_ms, 0: at once)"),
    },
    ConfigDef {
        name: "flush.messages",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        broker_key: Some("log.flush.interval.messages"),
        validator: Validator::AtLeast(1),
        doc: "This setting allows specifying an interval at which we will force an fsync of data written to the log. For example if this was set to 1 we would fsync after every message; if it were 5 we would fsync after every five messages. In general we recommend you not set this and use replication for durability and allow the operating system's background flush capabilities as it is more efficient. This setting can be overridden on a per-topic basis (see the per-topic configuration section).",
        read_only: false,
        support: Support::Honoured("every append that brings the records since the last forced sync to this many waits for an fdatasync (of everything before it too)"),
    },
    ConfigDef {
        name: "flush.ms",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        broker_key: Some("log.flush.interval.ms"),
        validator: Validator::AtLeast(0),
        doc: "This setting allows specifying a time interval at which we will force an fsync of data written to the log. For example if this was set to 1000 we would fsync after 1000 ms had passed. In general we recommend you not set this and use replication for durability and allow the operating system's background flush capabilities as it is more efficient.",
        read_only: false,
        support: Support::Honoured("the longest an append without acks=all stays without an fdatasync (the engine's flush_interval_ms; 0 is 1 ms, at most a year)"),
    },
    ConfigDef {
        name: "follower.replication.throttled.replicas",
        ty: ConfigType::List,
        default: "",
        broker_key: None,
        validator: Validator::ThrottledReplicas,
        doc: "A list of replicas for which log replication should be throttled on the follower side. The list should describe a set of replicas in the form [PartitionId]:[BrokerId],[PartitionId]:[BrokerId]:... or alternatively the wildcard '*' can be used to throttle all replicas for this topic.",
        read_only: false,
        support: Support::Stored("no replication yet"),
    },
    ConfigDef {
        name: "index.interval.bytes",
        ty: ConfigType::Int,
        default: "4096",
        broker_key: Some("log.index.interval.bytes"),
        validator: Validator::AtLeast(0),
        doc: "This setting controls how frequently Kafka adds an index entry to its offset index. The default setting ensures that we index a message roughly every 4096 bytes. More indexing allows reads to jump closer to the exact position in the log but makes the index larger. You probably don't need to change this.",
        read_only: false,
        support: Support::Honoured("one sparse index entry per this many bytes of log (0 is an entry per batch)"),
    },
    ConfigDef {
        name: "leader.replication.throttled.replicas",
        ty: ConfigType::List,
        default: "",
        broker_key: None,
        validator: Validator::ThrottledReplicas,
        doc: "A list of replicas for which log replication should be throttled on the leader side. The list should describe a set of replicas in the form [PartitionId]:[BrokerId],[PartitionId]:[BrokerId]:... or alternatively the wildcard '*' can be used to throttle all replicas for this topic.",
        read_only: false,
        support: Support::Stored("no replication yet"),
    },
    ConfigDef {
        name: "local.retention.bytes",
        ty: ConfigType::Long,
        default: "-2",
        broker_key: Some("log.local.retention.bytes"),
        validator: Validator::AtLeast(-2),
        doc: "The maximum size of local log segments that can grow for a partition before it deletes the old segments. Default value is -2, it represents `retention.bytes` value to be used. The effective value should always be less than or equal to `retention.bytes` value.",
        read_only: false,
        support: Support::Honoured("with remote.storage.enable: the local copy's size beyond which uploaded segments are deleted locally"),
    },
    ConfigDef {
        name: "local.retention.ms",
        ty: ConfigType::Long,
        default: "-2",
        broker_key: Some("log.local.retention.ms"),
        validator: Validator::AtLeast(-2),
        doc: "The number of milliseconds to keep the local log segment before it gets deleted. Default value is -2, it represents `retention.ms` value is to be used. The effective value should always be less than or equal to `retention.ms` value.",
        read_only: false,
        support: Support::Honoured("with remote.storage.enable: the local copy's age beyond which uploaded segments are deleted locally"),
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        broker_key: Some("log.cleaner.max.compaction.lag.ms"),
        validator: Validator::AtLeast(1),
        doc: "The maximum time a message will remain ineligible for compaction in the log. Only applicable for logs that are being compacted.",
        read_only: false,
        support: Support::Honoured("a partition whose oldest dirty segment's newest record is older than this is cleaned whatever its dirty ratio"),
    },
    ConfigDef {
        name: "max.message.bytes",
        ty: ConfigType::Int,
        default: "1048588",
        broker_key: Some("message.max.bytes"),
        validator: Validator::AtLeast(0),
        doc: "The largest record batch size allowed by Kafka (after compression if compression is enabled). If this is increased and there are consumers older than 0.10.2, the consumers' fetch size must also be increased so that they can fetch record batches this large. In the latest message format version, records are always grouped into batches for efficiency. In previous message format versions, uncompressed records are not grouped into batches and this limit only applies to a single record in that case.",
        read_only: false,
        support: Support::Honoured("a record batch larger than this (as sent, and after recompression) is refused with MESSAGE_TOO_LARGE"),
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        ty: ConfigType::Long,
        default: "3600000",
        broker_key: Some("log.message.timestamp.after.max.ms"),
        validator: Validator::AtLeast(0),
        doc: "This configuration sets the allowable timestamp difference between the message timestamp and the broker's timestamp. The message timestamp can be later than or equal to the broker's timestamp, with the maximum allowable difference determined by the value set in this configuration. If message.timestamp.type=CreateTime, the message will be rejected if the difference in timestamps exceeds this specified threshold. This configuration is ignored if message.timestamp.type=LogAppendTime.",
        read_only: false,
        support: Support::Honoured("a CreateTime batch whose first or max timestamp is later than the broker's time plus this is refused with INVALID_TIMESTAMP"),
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        ty: ConfigType::Long,
        default: "9223372036854775807",
        broker_key: Some("log.message.timestamp.before.max.ms"),
        validator: Validator::AtLeast(0),
        doc: "This configuration sets the allowable timestamp difference between the broker's timestamp and the message timestamp. The message timestamp can be earlier than or equal to the broker's timestamp, with the maximum allowable difference determined by the value set in this configuration. If message.timestamp.type=CreateTime, the message will be rejected if the difference in timestamps exceeds this specified threshold. This configuration is ignored if message.timestamp.type=LogAppendTime.",
        read_only: false,
        support: Support::Honoured("a CreateTime batch whose first or max timestamp is earlier than the broker's time minus this is refused with INVALID_TIMESTAMP"),
    },
    ConfigDef {
        name: "message.timestamp.type",
        ty: ConfigType::String,
        default: "CreateTime",
        broker_key: Some("log.message.timestamp.type"),
        validator: Validator::OneOf(&["CreateTime", "LogAppendTime"]),
        doc: "Define whether the timestamp in the message is message create time or log append time. The value should be either `CreateTime` or `LogAppendTime`",
        read_only: false,
        support: Support::Honoured("LogAppendTime: the broker writes its time into each batch (timestamp type bit, max timestamp, CRC32C recomputed) and answers it as log_append_time_ms"),
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        ty: ConfigType::Double,
        default: "0.5",
        broker_key: Some("log.cleaner.min.cleanable.ratio"),
        validator: Validator::Ratio,
        doc: "This configuration controls how frequently the log compactor will attempt to clean the log (assuming log compaction is enabled). By default we will avoid cleaning a log where more than 50% of the log has been compacted. This ratio bounds the maximum space wasted in the log by duplicates (at 50% at most 50% of the log could be duplicates). A higher ratio will mean fewer, more efficient cleanings but will mean more wasted space in the log. If the max.compaction.lag.ms or the min.compaction.lag.ms configurations are also specified, then the log compactor considers the log to be eligible for compaction as soon as either: (i) the dirty ratio threshold has been met and the log has had dirty (uncompacted) records for at least the min.compaction.lag.ms duration, or (ii) if the log has had dirty (uncompacted) records for at most the max.compaction.lag.ms period.",
        read_only: false,
        support: Support::Honoured("the shard's cleaner picks its dirtiest partition at or above this ratio of dirty (never cleaned) bytes to closed bytes"),
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        ty: ConfigType::Long,
        default: "0",
        broker_key: Some("log.cleaner.min.compaction.lag.ms"),
        validator: Validator::AtLeast(0),
        doc: "The minimum time a message will remain uncompacted in the log. Only applicable for logs that are being compacted.",
        read_only: false,
        support: Support::Honoured("whole segments: one whose newest record is younger than this is not cleaned yet, nor any after it"),
    },
    ConfigDef {
        name: "min.insync.replicas",
        ty: ConfigType::Int,
        default: "1",
        broker_key: Some("min.insync.replicas"),
        validator: Validator::AtLeast(1),
        doc: "When a producer sets acks to \"all\" (or \"-1\"), this configuration specifies the minimum number of replicas that must acknowledge a write for the write to be considered successful. If this minimum cannot be met, then the producer will raise an exception (either NotEnoughReplicas or NotEnoughReplicasAfterAppend).When used together, min.insync.replicas and acks allow you to enforce greater durability guarantees. A typical scenario would be to create a topic with a replication factor of 3, set min.insync.replicas to 2, and produce with acks of \"all\". This will ensure that the producer raises an exception if a majority of replicas do not receive a write.",
        read_only: false,
        support: Support::Stored("enforced once replication lands: a single broker is the whole ISR"),
    },
    ConfigDef {
        name: "preallocate",
        ty: ConfigType::Boolean,
        default: "false",
        broker_key: Some("log.preallocate"),
        validator: Validator::Any,
        doc: "True if we should preallocate the file on disk when creating a new log segment.",
        read_only: false,
        support: Support::Stored("Spate always preallocates segment files (log.preallocate_bytes)"),
    },
    ConfigDef {
        name: "remote.log.copy.disable",
        ty: ConfigType::Boolean,
        default: "false",
        broker_key: None,
        validator: Validator::Any,
        doc: "Determines whether tiered data for a topic should become read only, and no more data uploading on a topic. Once this config is set to true, the local retention configuration (i.e. local.retention.ms/bytes) becomes irrelevant, and all data expiration follows the topic-wide retention configuration(i.e. retention.ms/bytes).",
        read_only: false,
        support: Support::Honoured("with remote.storage.enable: no more uploads; what the tier holds stays readable and under retention, and local retention follows retention.ms/bytes"),
    },
    ConfigDef {
        name: "remote.log.delete.on.disable",
        ty: ConfigType::Boolean,
        default: "false",
        broker_key: None,
        validator: Validator::Any,
        doc: "Determines whether tiered data for a topic should be deleted after tiered storage is disabled on a topic. This configuration should be enabled when trying to set `remote.storage.enable` from true to false",
        read_only: false,
        support: Support::Honoured("required to set remote.storage.enable from true to false: the partitions' objects are then removed from the tier and each log starts at its local start"),
    },
    ConfigDef {
        name: "remote.storage.enable",
        ty: ConfigType::Boolean,
        default: "false",
        broker_key: None,
        validator: Validator::Any,
        doc: "To enable tiered storage for a topic, set this configuration as true. You can not disable this config once it is enabled. It will be provided in future versions.",
        read_only: false,
        support: Support::Honoured("closed segments go to the broker's cold tier (refused on a broker without one, and on a compacted topic); turned off again only with remote.log.delete.on.disable=true, which removes the remote data"),
    },
    ConfigDef {
        name: "retention.bytes",
        ty: ConfigType::Long,
        default: "-1",
        broker_key: Some("log.retention.bytes"),
        validator: Validator::Any,
        doc: "This configuration controls the maximum size a partition (which consists of log segments) can grow to before we will discard old log segments to free up space if we are using the \"delete\" retention policy. By default there is no size limit only a time limit. Since this limit is enforced at the partition level, multiply it by the number of partitions to compute the topic retention in bytes. Additionally, retention.bytes configuration operates independently of \"segment.ms\" and \"segment.bytes\" configurations. Moreover, it triggers the rolling of new segment if the retention.bytes is configured to zero.",
        read_only: false,
        support: Support::Honoured("oldest segments are deleted while the partition is larger (-1 or any negative: no limit)"),
    },
    ConfigDef {
        name: "retention.ms",
        ty: ConfigType::Long,
        default: "604800000",
        broker_key: Some("log.retention.ms"),
        validator: Validator::AtLeast(-1),
        doc: "This configuration controls the maximum time we will retain a log before we will discard old log segments to free up space if we are using the \"delete\" retention policy. This represents an SLA on how soon consumers must read their data. If set to -1, no time limit is applied. Additionally, retention.ms configuration operates independently of \"segment.ms\" and \"segment.bytes\" configurations. Moreover, it triggers the rolling of new segment if the retention.ms condition is satisfied.",
        read_only: false,
        support: Support::Honoured("segments whose newest record is older are deleted (-1: no limit)"),
    },
    ConfigDef {
        name: "segment.bytes",
        ty: ConfigType::Int,
        default: "1073741824",
        broker_key: Some("log.segment.bytes"),
        validator: Validator::AtLeast(1048576),
        doc: "This configuration controls the segment file size for the log. Retention and cleaning is always done a file at a time so a larger segment size means fewer files but less granular control over retention.",
        read_only: false,
        support: Support::Honoured("a segment is rolled before it would pass this size"),
    },
    ConfigDef {
        name: "segment.index.bytes",
        ty: ConfigType::Int,
        default: "10485760",
        broker_key: Some("log.index.size.max.bytes"),
        validator: Validator::AtLeast(4),
        doc: "This configuration controls the size of the index that maps offsets to file positions. We preallocate this index file and shrink it only after log rolls. You generally should not need to change this setting.",
        read_only: false,
        support: Support::Honoured("a segment is rolled once its offset index holds this many bytes of 8-byte entries (the broker's default is log.segment_index_bytes)"),
    },
    ConfigDef {
        name: "segment.jitter.ms",
        ty: ConfigType::Long,
        default: "0",
        broker_key: Some("log.roll.jitter.ms"),
        validator: Validator::AtLeast(0),
        doc: "The maximum random jitter subtracted from the scheduled segment roll time to avoid thundering herds of segment rolling",
        read_only: false,
        support: Support::Honoured("each partition rolls by age at segment.ms minus a fixed jitter below this, from a hash of its name (Kafka draws one per segment)"),
    },
    ConfigDef {
        name: "segment.ms",
        ty: ConfigType::Long,
        default: "604800000",
        broker_key: Some("log.roll.ms"),
        validator: Validator::AtLeast(1),
        doc: "This configuration controls the period of time after which Kafka will force the log to roll even if the segment file isn't full to ensure that retention can delete or compact old data.",
        read_only: false,
        support: Support::Honoured("a segment older than this is rolled at the next append"),
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        ty: ConfigType::Boolean,
        default: "false",
        broker_key: Some("unclean.leader.election.enable"),
        validator: Validator::Any,
        doc: "Indicates whether to enable replicas not in the ISR set to be elected as leader as a last resort, even though doing so may result in data loss.Note: In KRaft mode, when enabling this config dynamically, it needs to wait for the unclean leader electionthread to trigger election periodically (default is 5 minutes). Please run `kafka-leader-election.sh` with `unclean` option to trigger the unclean leader election immediately if needed.",
        read_only: false,
        support: Support::Stored("no leader election yet"),
    },
];

/// The definition of a topic config.
pub fn find(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

/// The error message for a key that is not a topic config.
pub fn unknown_key(name: &str) -> String {
    format!("Unknown topic config name: {name:?} (not one of Kafka 4's topic configs; see DescribeConfigs for the list)")
}

impl ConfigDef {
    /// What the key accepts, in words (for error messages).
    pub fn allowed(&self) -> String {
        let ty = self.ty.name();
        match self.validator {
            Validator::Any => format!("a {ty}"),
            Validator::AtLeast(n) => format!("a {ty} of at least {n}"),
            Validator::Between(a, b) => format!("a {ty} from {a} to {b}"),
            Validator::Ratio => format!("a {ty} from 0 to 1"),
            Validator::OneOf(v) => format!("one of {}", v.join(", ")),
            Validator::ListOf(v) => format!("a comma-separated list of {}", v.join(", ")),
            Validator::GzipLevel => format!("a {ty}: -1 (the default level) or 1 to 9"),
            Validator::ThrottledReplicas => {
                "* or a comma-separated list of partition:broker pairs".to_string()
            }
        }
    }

    /// Checks `raw` against the key's type and validator; returns it normalised (trimmed; a
    /// boolean in lower case; a list without blanks around its items), as it is stored.
    pub fn validate(&self, raw: &str) -> Result<String, String> {
        let v = raw.trim();
        let refuse = |why: &str| {
            Err(format!(
                "Invalid value {raw:?} for configuration {}: {why}; allowed: {}",
                self.name,
                self.allowed()
            ))
        };
        let int_range = |n: i64| -> Result<(), String> {
            let ok = match self.validator {
                Validator::AtLeast(min) => n >= min,
                Validator::Between(a, b) => (a..=b).contains(&n),
                Validator::GzipLevel => n == -1 || (1..=9).contains(&n),
                _ => true,
            };
            if ok {
                Ok(())
            } else {
                Err("out of range".into())
            }
        };
        match self.ty {
            ConfigType::Boolean => match v.to_ascii_lowercase().as_str() {
                b @ ("true" | "false") => Ok(b.to_string()),
                _ => refuse("not a BOOLEAN (true or false)"),
            },
            ConfigType::Int => match v.parse::<i32>() {
                Ok(n) => match int_range(i64::from(n)) {
                    Ok(()) => Ok(n.to_string()),
                    Err(e) => refuse(&e),
                },
                Err(_) => refuse("not a number of type INT"),
            },
            ConfigType::Long => match v.parse::<i64>() {
                Ok(n) => match int_range(n) {
                    Ok(()) => Ok(n.to_string()),
                    Err(e) => refuse(&e),
                },
                Err(_) => refuse("not a number of type LONG"),
            },
            ConfigType::Double => match v.parse::<f64>() {
                Ok(x) if x.is_finite() => {
                    if self.validator == Validator::Ratio && !(0.0..=1.0).contains(&x) {
                        refuse("out of range")
                    } else {
                        Ok(v.to_string())
                    }
                }
                _ => refuse("not a number of type DOUBLE"),
            },
            ConfigType::String | ConfigType::Class | ConfigType::Password => match self.validator {
                Validator::OneOf(allowed) if !allowed.contains(&v) => {
                    refuse("not an allowed value")
                }
                _ => Ok(v.to_string()),
            },
            ConfigType::List => {
                let items = split_list(v);
                match self.validator {
                    Validator::ListOf(allowed) => {
                        if let Some(bad) = items.iter().find(|i| !allowed.contains(i)) {
                            return refuse(&format!("{bad:?} is not an allowed item"));
                        }
                        if items.is_empty() {
                            return refuse("the list is empty");
                        }
                    }
                    Validator::ThrottledReplicas => {
                        let pair = |i: &&str| {
                            i.split_once(':').is_some_and(|(p, b)| {
                                p.trim().parse::<u32>().is_ok() && b.trim().parse::<i32>().is_ok()
                            })
                        };
                        let ok = items == ["*"] || items.iter().all(pair);
                        if !ok {
                            return refuse("not * nor a list of partition:broker pairs");
                        }
                    }
                    _ => {}
                }
                Ok(items.join(","))
            }
        }
    }
}

/// A list config's items, trimmed, blanks dropped (Kafka's `ConfigDef.parseType` for LIST).
pub fn split_list(v: &str) -> Vec<&str> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// The broker-level settings topics inherit: Spate's broker config (`[log]`, `[kafka]`),
/// and which of its keys the config file set (those show as STATIC_BROKER_CONFIG; the rest
/// are Spate's defaults, DEFAULT_CONFIG).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDefaults {
    pub log: LogConfig,
    /// `message.max.bytes`: the default of every topic's `max.message.bytes`.
    pub message_max_bytes: i32,
    /// `min.insync.replicas`.
    pub min_insync_replicas: i32,
    /// Kafka names of the broker keys the config file set (e.g. `log.retention.ms`).
    pub set_in_file: BTreeSet<String>,
    /// The broker has a cold tier (Kafka's `remote.log.storage.system.enable`).
    pub tiered: bool,
}

impl Default for BrokerDefaults {
    fn default() -> Self {
        Self {
            log: LogConfig::default(),
            message_max_bytes: 1_048_588,
            min_insync_replicas: 1,
            set_in_file: BTreeSet::new(),
            tiered: false,
        }
    }
}

impl BrokerDefaults {
    /// The value of a topic key's broker synonym in Spate's broker config, if Spate has that
    /// setting.
    pub fn value_of(&self, topic_key: &str) -> Option<String> {
        let l = &self.log;
        Some(match topic_key {
            "retention.ms" => l.retention_ms.to_string(),
            "retention.bytes" => l.retention_bytes.to_string(),
            "segment.bytes" => l.segment_bytes.to_string(),
            "segment.ms" => l.segment_ms.to_string(),
            "index.interval.bytes" => l.index_interval_bytes.to_string(),
            "segment.index.bytes" => l.segment_index_bytes.to_string(),
            "file.delete.delay.ms" => l.file_delete_delay_ms.to_string(),
            "flush.ms" => l.flush_interval_ms.to_string(),
            "max.message.bytes" => self.message_max_bytes.to_string(),
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            _ => return None,
        })
    }

    /// The broker-resource entries DescribeConfigs answers: (Kafka name, value, set in the
    /// config file).
    pub fn broker_entries(&self) -> Vec<(&'static str, String)> {
        TOPIC_CONFIGS
            .iter()
            .filter_map(|d| Some((d.broker_key?, self.value_of(d.name)?)))
            .collect()
    }
}

/// A key's value for a topic and where it comes from (a DescribeConfigs source), with the
/// synonyms in Kafka's order: the topic's override, the broker's setting, the default.
pub struct Resolved {
    pub value: String,
    pub source: i8,
    pub synonyms: Vec<(String, String, i8)>,
}

/// The value of `def` for a topic with `overrides`.
pub fn resolve(def: &ConfigDef, overrides: &TopicConfigs, broker: &BrokerDefaults) -> Resolved {
    let mut synonyms = Vec::new();
    if let Some(v) = overrides.get(def.name) {
        synonyms.push((
            def.name.to_string(),
            v.to_string(),
            source::DYNAMIC_TOPIC_CONFIG,
        ));
    }
    let broker_value = broker.value_of(def.name);
    if let (Some(key), Some(v)) = (def.broker_key, &broker_value) {
        let src = if broker.set_in_file.contains(key) {
            source::STATIC_BROKER_CONFIG
        } else {
            source::DEFAULT_CONFIG
        };
        synonyms.push((key.to_string(), v.clone(), src));
    } else {
        synonyms.push((
            def.broker_key.unwrap_or(def.name).to_string(),
            def.default.to_string(),
            source::DEFAULT_CONFIG,
        ));
    }
    let (value, source) = synonyms
        .first()
        .map(|(_, v, s)| (v.clone(), *s))
        .unwrap_or_else(|| (def.default.to_string(), source::DEFAULT_CONFIG));
    Resolved {
        value,
        source,
        synonyms,
    }
}

/// `compression.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicCompression {
    /// Batches are kept as the producer sent them.
    Producer,
    /// Batches in another codec are recompressed to this one (`None`: uncompressed).
    Codec(Compression),
}

/// What a topic's configs mean for the broker, parsed once per metadata change.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSettings {
    /// The engine's settings of the topic's partitions, before the per-partition jitter.
    pub log: LogConfig,
    pub segment_jitter_ms: u64,
    pub compact: bool,
    pub delete: bool,
    pub compression: TopicCompression,
    pub max_message_bytes: i32,
    pub log_append_time: bool,
    pub timestamp_before_max_ms: i64,
    pub timestamp_after_max_ms: i64,
    /// Records appended between forced fdatasyncs; `i64::MAX`: none forced.
    pub flush_messages: i64,
    pub min_insync_replicas: i32,
    /// `remote.storage.enable` on a broker with a cold tier.
    pub remote_storage: bool,
}

impl TopicSettings {
    /// The settings of a topic with `overrides`. A value that does not parse (values are
    /// checked before they are stored, so only a hand-edited file has one) takes the default.
    pub fn new(overrides: &TopicConfigs, broker: &BrokerDefaults) -> Self {
        // An override as stored (checked against Kafka's ranges when it was set; the
        // internal topic's are set by the broker itself, within the engine's limits only),
        // else the broker's value, else Kafka's default.
        let value = |key: &str| -> String {
            match overrides.get(key) {
                Some(v) => v.trim().to_string(),
                None => broker
                    .value_of(key)
                    .or_else(|| find(key).map(|d| d.default.to_string()))
                    .unwrap_or_default(),
            }
        };
        let long = |key: &str, fallback: i64| value(key).parse::<i64>().unwrap_or(fallback);
        let policy = value("cleanup.policy");
        let policies = split_list(&policy);
        let compact = policies.contains(&"compact");
        let delete = policies.contains(&"delete") || policies.is_empty();
        let mut log = broker.log.clone();
        log.retention_ms = long("retention.ms", log.retention_ms).max(-1);
        log.retention_bytes = long("retention.bytes", log.retention_bytes).max(-1);
        if !delete {
            // compact alone: nothing is deleted by age or size.
            log.retention_ms = -1;
            log.retention_bytes = -1;
        }
        if compact {
            let ratio = value("min.cleanable.dirty.ratio")
                .parse::<f64>()
                .unwrap_or(0.5);
            log.compaction = Some(spate_engine::compaction::CompactionPolicy {
                min_cleanable_dirty_ppm: (ratio.clamp(0.0, 1.0)
                    * spate_engine::compaction::PPM as f64)
                    .round() as u64,
                min_compaction_lag_ms: long("min.compaction.lag.ms", 0).max(0),
                max_compaction_lag_ms: long("max.compaction.lag.ms", i64::MAX).max(1),
                delete_retention_ms: long("delete.retention.ms", 86_400_000).max(0),
            });
        }
        let remote_storage = broker.tiered && value("remote.storage.enable") == "true";
        log.remote_storage = remote_storage;
        // -2: the same as the whole log's (Kafka's meaning).
        let local = |key: &str, total: i64| match long(key, -2) {
            -2 => total,
            v => v.max(-1),
        };
        log.local_retention_ms = local("local.retention.ms", log.retention_ms);
        log.local_retention_bytes = local("local.retention.bytes", log.retention_bytes);
        // Uploads stopped: local retention no longer applies, the whole log's does (KIP-950).
        log.remote_copy_disabled = remote_storage && value("remote.log.copy.disable") == "true";
        if log.remote_copy_disabled {
            log.local_retention_ms = log.retention_ms;
            log.local_retention_bytes = log.retention_bytes;
        }
        let positive = |key: &str, fallback: u64| u64::try_from(long(key, 0)).unwrap_or(fallback);
        log.segment_bytes = positive("segment.bytes", log.segment_bytes);
        log.segment_ms = positive("segment.ms", log.segment_ms).max(1);
        log.index_interval_bytes =
            positive("index.interval.bytes", log.index_interval_bytes).max(1);
        log.flush_interval_ms = positive("flush.ms", log.flush_interval_ms).clamp(1, FLUSH_MS_MAX);
        log.segment_index_bytes = positive("segment.index.bytes", log.segment_index_bytes).max(8);
        log.file_delete_delay_ms = positive("file.delete.delay.ms", log.file_delete_delay_ms);
        let compression = match value("compression.type").as_str() {
            "uncompressed" => TopicCompression::Codec(Compression::None),
            "gzip" => TopicCompression::Codec(Compression::Gzip),
            "snappy" => TopicCompression::Codec(Compression::Snappy),
            "lz4" => TopicCompression::Codec(Compression::Lz4),
            "zstd" => TopicCompression::Codec(Compression::Zstd),
            _ => TopicCompression::Producer,
        };
        Self {
            log,
            segment_jitter_ms: positive("segment.jitter.ms", 0),
            compact,
            delete,
            compression,
            max_message_bytes: long("max.message.bytes", 1_048_588).clamp(0, i64::from(i32::MAX))
                as i32,
            log_append_time: value("message.timestamp.type") == "LogAppendTime",
            timestamp_before_max_ms: long("message.timestamp.before.max.ms", NEVER),
            timestamp_after_max_ms: long("message.timestamp.after.max.ms", 3_600_000),
            flush_messages: long("flush.messages", NEVER).max(1),
            min_insync_replicas: long("min.insync.replicas", 1).clamp(1, i64::from(i32::MAX))
                as i32,
            remote_storage,
        }
    }

    /// The engine's settings of one partition: `segment.ms` less this partition's jitter, a
    /// fixed amount below `segment.jitter.ms` from a hash of the topic and partition, so the
    /// partitions of a topic created at once do not all roll at once.
    pub fn log_config(&self, topic: &str, topic_id: [u8; 16], partition: u32) -> LogConfig {
        let mut log = self.log.clone();
        // Also when tiering is off: a partition leaving the tier removes its objects there.
        log.remote_key = remote_key(topic, topic_id, partition);
        if self.segment_jitter_ms > 0 {
            let h = crc32fast::hash(format!("{topic}-{partition}").as_bytes());
            let jitter = u64::from(h) % self.segment_jitter_ms.min(log.segment_ms);
            log.segment_ms = (log.segment_ms - jitter).max(1);
        }
        log
    }
}

/// A partition's prefix in the cold tier: the topic's name and id (a topic deleted and
/// created again under its name has other objects) and the partition.
pub fn remote_key(topic: &str, topic_id: [u8; 16], partition: u32) -> String {
    let id: String = topic_id.iter().map(|b| format!("{b:02x}")).collect();
    format!("{topic}-{id}/{partition}")
}

/// Checks a topic's overrides as a whole: each value, the keys together (Kafka's
/// cross-checks), and the engine's limits. The message names the key, the value and what is
/// allowed.
pub fn check_topic(overrides: &TopicConfigs, broker: &BrokerDefaults) -> Result<(), String> {
    for (k, v) in overrides.iter() {
        let def = find(k).ok_or_else(|| unknown_key(k))?;
        def.validate(v)?;
    }
    let value = |key: &str| -> String {
        find(key).map_or_else(String::new, |d| resolve(d, overrides, broker).value)
    };
    let long = |key: &str| value(key).parse::<i64>().ok();
    if value("remote.storage.enable") == "true" {
        if !broker.tiered {
            return Err("Invalid value \"true\" for configuration remote.storage.enable: this broker has no cold tier (start it with --tier-dir or a [tier] table; Kafka refuses it likewise without remote.log.storage.system.enable); allowed: false".into());
        }
        if split_list(&value("cleanup.policy")).contains(&"compact") {
            return Err("Invalid value \"true\" for configuration remote.storage.enable: a compacted topic (cleanup.policy=compact) cannot be tiered, as in Kafka; allowed: false, or cleanup.policy=delete".into());
        }
    }
    for (local, total) in [
        ("local.retention.ms", "retention.ms"),
        ("local.retention.bytes", "retention.bytes"),
    ] {
        if let (Some(l), Some(t)) = (long(local), long(total)) {
            // -2: the same as the total; -1: no limit, which a limited total contradicts.
            let contradicts = t >= 0 && l != -2 && (l == -1 || l > t);
            if contradicts {
                return Err(format!(
                    "Invalid value {l} for configuration {local}: it must not exceed {total} = {t}; allowed: -2 (the same as {total}) or at most {t}"
                ));
            }
        }
    }
    if let (Some(min), Some(max)) = (long("min.compaction.lag.ms"), long("max.compaction.lag.ms")) {
        if min > max {
            return Err(format!(
                "Invalid value {min} for configuration min.compaction.lag.ms: it must not exceed max.compaction.lag.ms = {max}"
            ));
        }
    }
    let settings = TopicSettings::new(overrides, broker);
    settings
        .log
        .validate()
        .map_err(|e| format!("the topic's settings are outside the engine's limits: {e}"))
}

/// IncrementalAlterConfigs' operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlterOp {
    Set,
    Delete,
    Append,
    Subtract,
}

impl AlterOp {
    pub fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            0 => AlterOp::Set,
            1 => AlterOp::Delete,
            2 => AlterOp::Append,
            3 => AlterOp::Subtract,
            _ => return None,
        })
    }
}

/// One change of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    pub name: String,
    pub op: AlterOp,
    pub value: Option<String>,
}

/// Applies `changes` to `current` (or, with `replace`, to nothing: AlterConfigs' semantics),
/// validating each key and then the result as a whole. Either every change applies or the
/// error says which one does not, and nothing changes.
pub fn apply_changes(
    current: &TopicConfigs,
    changes: &[ConfigChange],
    replace: bool,
    broker: &BrokerDefaults,
) -> Result<TopicConfigs, String> {
    let mut seen = BTreeSet::new();
    for c in changes {
        if !seen.insert(c.name.as_str()) {
            return Err(format!(
                "{:?} appears more than once in the request",
                c.name
            ));
        }
    }
    let mut next = if replace {
        TopicConfigs::default()
    } else {
        current.clone()
    };
    for c in changes {
        let def = find(&c.name).ok_or_else(|| unknown_key(&c.name))?;
        if def.read_only {
            return Err(format!("{} is read-only: it cannot be changed", def.name));
        }
        match c.op {
            AlterOp::Set => {
                let Some(v) = &c.value else {
                    return Err(format!(
                        "Invalid value null for configuration {}: a value is required; allowed: {}",
                        def.name,
                        def.allowed()
                    ));
                };
                next.set(def.name, def.validate(v)?);
            }
            AlterOp::Delete => next.remove(def.name),
            AlterOp::Append | AlterOp::Subtract => {
                if def.ty != ConfigType::List {
                    return Err(format!(
                        "{} is a {}: APPEND and SUBTRACT apply to LIST configs only",
                        def.name,
                        def.ty.name()
                    ));
                }
                let now = resolve(def, &next, broker).value;
                let mut items: Vec<String> =
                    split_list(&now).into_iter().map(str::to_string).collect();
                let given = c.value.as_deref().unwrap_or("");
                for item in split_list(given) {
                    if c.op == AlterOp::Append {
                        if !items.iter().any(|i| i == item) {
                            items.push(item.to_string());
                        }
                    } else {
                        items.retain(|i| i != item);
                    }
                }
                next.set(def.name, def.validate(&items.join(","))?);
            }
        }
    }
    let remote = |c: &TopicConfigs| {
        find("remote.storage.enable").is_some_and(|d| resolve(d, c, broker).value == "true")
    };
    let delete_on_disable = find("remote.log.delete.on.disable")
        .is_some_and(|d| resolve(d, &next, broker).value == "true");
    if remote(current) && !remote(&next) && !delete_on_disable {
        return Err("It is invalid to disable remote storage without deleting remote data. If you want to keep the remote data and turn to read only, please set `remote.storage.enable=true,remote.log.copy.disable=true`. If you want to disable remote storage and delete all remote data, please set `remote.storage.enable=false,remote.log.delete.on.disable=true`.".into());
    }
    check_topic(&next, broker)?;
    Ok(next)
}

/// Where the metadata meets the configs: what each shard opens, with its settings.
impl Metadata {
    /// The partitions placed on `shard`, each with its topic's settings over the broker's:
    /// what that shard opens at start (`spate_engine::registry::ShardLogs::open_assigned`).
    pub fn assigned_to(&self, shard: usize, broker: &BrokerDefaults) -> Vec<AssignedPartition> {
        let mut out = Vec::new();
        for topic in &self.topics {
            let settings = TopicSettings::new(&topic.config, broker);
            for (p, owner) in topic.partition_shards.iter().enumerate() {
                if *owner as usize == shard {
                    out.push(AssignedPartition {
                        topic: topic.name.clone(),
                        partition: p as u32,
                        config: settings.log_config(&topic.name, topic.topic_id, p as u32),
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> TopicConfigs {
        let mut c = TopicConfigs::default();
        for (k, v) in pairs {
            c.set(k, v.to_string());
        }
        c
    }

    fn set(name: &str, value: &str) -> ConfigChange {
        ConfigChange {
            name: name.into(),
            op: AlterOp::Set,
            value: Some(value.into()),
        }
    }

    #[test]
    fn the_table_is_sorted_unique_and_its_defaults_validate() {
        for w in TOPIC_CONFIGS.windows(2) {
            assert!(w[0].name < w[1].name, "{} then {}", w[0].name, w[1].name);
        }
        for d in TOPIC_CONFIGS {
            // Kafka's own defaults pass Kafka's validators (an empty throttled list too),
            // except the local retention placeholder, which is in range (-2).
            assert!(
                d.validate(d.default).is_ok(),
                "{}: {:?}",
                d.name,
                d.validate(d.default)
            );
            assert!(!d.doc.is_empty());
        }
        for gone in [
            "message.format.version",
            "message.downconversion.enable",
            "message.timestamp.difference.max.ms",
        ] {
            assert!(find(gone).is_none(), "{gone} was removed in Kafka 4");
        }
        assert_eq!(
            find("message.timestamp.after.max.ms").unwrap().default,
            "3600000"
        );
    }

    #[test]
    fn values_are_checked_by_type_and_range_with_the_key_value_and_allowed_in_the_message() {
        let b = BrokerDefaults::default();
        let e = apply_changes(
            &TopicConfigs::default(),
            &[set("retention.ms", "abc")],
            false,
            &b,
        )
        .unwrap_err();
        assert!(
            e.contains("retention.ms") && e.contains("abc") && e.contains("LONG"),
            "{e}"
        );
        let e = apply_changes(
            &TopicConfigs::default(),
            &[set("retention.ms", "-5")],
            false,
            &b,
        )
        .unwrap_err();
        assert!(e.contains("at least -1"), "{e}");
        let e = apply_changes(
            &TopicConfigs::default(),
            &[set("segment.bytes", "65536")],
            false,
            &b,
        )
        .unwrap_err();
        assert!(e.contains("1048576"), "{e}");
        let e = apply_changes(
            &TopicConfigs::default(),
            &[set("cleanup.policy", "compact,x")],
            false,
            &b,
        )
        .unwrap_err();
        assert!(e.contains("compact, delete"), "{e}");
        assert!(
            apply_changes(&TopicConfigs::default(), &[set("no.such", "1")], false, &b)
                .unwrap_err()
                .contains("Unknown topic config")
        );
        let ok = apply_changes(
            &TopicConfigs::default(),
            &[
                set("cleanup.policy", " compact , delete "),
                set("preallocate", "TRUE"),
            ],
            false,
            &b,
        )
        .unwrap();
        assert_eq!(ok.get("cleanup.policy"), Some("compact,delete"));
        assert_eq!(ok.get("preallocate"), Some("true"));
        // INT is 32-bit.
        assert!(apply_changes(
            &TopicConfigs::default(),
            &[set("max.message.bytes", "3000000000")],
            false,
            &b
        )
        .is_err());
    }

    #[test]
    fn contradictions_and_one_bad_key_change_nothing() {
        let b = BrokerDefaults::default();
        let now = configs(&[("retention.ms", "1000")]);
        let e = apply_changes(&now, &[set("local.retention.ms", "5000")], false, &b).unwrap_err();
        assert!(
            e.contains("local.retention.ms") && e.contains("retention.ms = 1000"),
            "{e}"
        );
        assert!(apply_changes(&now, &[set("local.retention.ms", "500")], false, &b).is_ok());
        let e = apply_changes(
            &now,
            &[
                set("min.compaction.lag.ms", "10"),
                set("max.compaction.lag.ms", "5"),
            ],
            false,
            &b,
        )
        .unwrap_err();
        assert!(e.contains("max.compaction.lag.ms"), "{e}");
        assert!(apply_changes(&now, &[set("remote.storage.enable", "true")], false, &b).is_err());
        assert!(apply_changes(
            &now,
            &[set("retention.ms", "5"), set("retention.ms", "6")],
            false,
            &b
        )
        .is_err());
    }

    #[test]
    fn incremental_operations_and_replace() {
        let b = BrokerDefaults::default();
        let now = configs(&[("retention.ms", "1000"), ("segment.ms", "60000")]);
        let op = |name: &str, op, value: Option<&str>| ConfigChange {
            name: name.into(),
            op,
            value: value.map(str::to_string),
        };
        let next = apply_changes(
            &now,
            &[
                op("retention.ms", AlterOp::Delete, None),
                op("cleanup.policy", AlterOp::Append, Some("compact")),
            ],
            false,
            &b,
        )
        .unwrap();
        assert_eq!(next.get("retention.ms"), None);
        assert_eq!(next.get("segment.ms"), Some("60000"));
        assert_eq!(next.get("cleanup.policy"), Some("delete,compact"));
        let next = apply_changes(
            &next,
            &[op("cleanup.policy", AlterOp::Subtract, Some("delete"))],
            false,
            &b,
        )
        .unwrap();
        assert_eq!(next.get("cleanup.policy"), Some("compact"));
        // Subtracting the last item leaves an empty list, which cleanup.policy refuses.
        assert!(apply_changes(
            &next,
            &[op("cleanup.policy", AlterOp::Subtract, Some("compact"))],
            false,
            &b
        )
        .is_err());
        assert!(apply_changes(
            &next,
            &[op("retention.ms", AlterOp::Append, Some("1"))],
            false,
            &b
        )
        .is_err());
        let replaced = apply_changes(&now, &[set("segment.ms", "70000")], true, &b).unwrap();
        assert_eq!(replaced.get("retention.ms"), None);
        assert_eq!(replaced.get("segment.ms"), Some("70000"));
    }

    #[test]
    fn sources_and_synonyms() {
        let mut b = BrokerDefaults::default();
        b.log.retention_ms = 5000;
        b.set_in_file.insert("log.retention.ms".into());
        let none = TopicConfigs::default();
        let r = resolve(find("retention.ms").unwrap(), &none, &b);
        assert_eq!(
            (r.value.as_str(), r.source),
            ("5000", source::STATIC_BROKER_CONFIG)
        );
        let r = resolve(find("segment.ms").unwrap(), &none, &b);
        assert_eq!(r.source, source::DEFAULT_CONFIG);
        assert_eq!(r.synonyms[0].0, "log.roll.ms");
        let r = resolve(find("compression.type").unwrap(), &none, &b);
        assert_eq!(
            (r.value.as_str(), r.source),
            ("producer", source::DEFAULT_CONFIG)
        );
        let mine = configs(&[("retention.ms", "7")]);
        let r = resolve(find("retention.ms").unwrap(), &mine, &b);
        assert_eq!(
            (r.value.as_str(), r.source),
            ("7", source::DYNAMIC_TOPIC_CONFIG)
        );
        assert_eq!(r.synonyms.len(), 2);
    }

    #[test]
    fn settings_follow_the_configs() {
        let b = BrokerDefaults::default();
        let s = TopicSettings::new(
            &configs(&[("cleanup.policy", "compact"), ("retention.ms", "10")]),
            &b,
        );
        assert!(s.compact && !s.delete);
        assert_eq!((s.log.retention_ms, s.log.retention_bytes), (-1, -1));
        let s = TopicSettings::new(
            &configs(&[("cleanup.policy", "compact,delete"), ("retention.ms", "10")]),
            &b,
        );
        assert_eq!(s.log.retention_ms, 10);
        let s = TopicSettings::new(
            &configs(&[("flush.ms", "0"), ("index.interval.bytes", "0")]),
            &b,
        );
        assert_eq!(
            (s.log.flush_interval_ms, s.log.index_interval_bytes),
            (1, 1)
        );
        let s = TopicSettings::new(&TopicConfigs::default(), &b);
        assert_eq!(s.log.flush_interval_ms, b.log.flush_interval_ms);
        assert_eq!(s.compression, TopicCompression::Producer);
        let s = TopicSettings::new(
            &configs(&[("segment.ms", "100000"), ("segment.jitter.ms", "50000")]),
            &b,
        );
        let rolls: BTreeSet<u64> = (0..16)
            .map(|p| s.log_config("t", [0; 16], p).segment_ms)
            .collect();
        assert!(rolls.iter().all(|ms| (50_001..=100_000).contains(ms)));
        assert!(rolls.len() > 1, "the jitter differs between partitions");
    }

    #[test]
    fn tiering_is_read_only_with_copy_disable_and_turns_off_only_deleting_remote_data() {
        let b = BrokerDefaults {
            tiered: true,
            ..BrokerDefaults::default()
        };
        let on = configs(&[
            ("remote.storage.enable", "true"),
            ("retention.bytes", "9000000"),
            ("local.retention.bytes", "1000000"),
        ]);
        let s = TopicSettings::new(&on, &b);
        assert!(s.log.remote_storage && !s.log.remote_copy_disabled);
        assert_eq!(s.log.local_retention_bytes, 1_000_000);
        let read_only =
            apply_changes(&on, &[set("remote.log.copy.disable", "true")], false, &b).unwrap();
        let s = TopicSettings::new(&read_only, &b);
        assert!(s.log.remote_storage && s.log.remote_copy_disabled);
        assert_eq!(
            s.log.local_retention_bytes, 9_000_000,
            "retention.bytes applies"
        );
        let e =
            apply_changes(&on, &[set("remote.storage.enable", "false")], false, &b).unwrap_err();
        assert!(e.contains("remote.log.delete.on.disable=true"), "{e}");
        let off = apply_changes(
            &on,
            &[
                set("remote.storage.enable", "false"),
                set("remote.log.delete.on.disable", "true"),
            ],
            false,
            &b,
        )
        .unwrap();
        let s = TopicSettings::new(&off, &b);
        assert!(!s.log.remote_storage && !s.log.remote_copy_disabled);
        // The partition still knows its place in the tier, to remove what is there.
        assert!(!s.log_config("t", [1; 16], 0).remote_key.is_empty());
    }
}
