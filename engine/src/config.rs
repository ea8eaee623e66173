//! Tunables of the log engine, with their defaults. Loaded from the `[log]` table of the
//! broker's TOML file; a topic may override the retention and segment settings.

use serde::{Deserialize, Serialize};

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;

/// Settings of every partition log on a broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A segment is rolled when appending a frame would take it past this size.
    pub segment_bytes: u64,
    /// A segment is rolled when it is older than this, at the next append.
    pub segment_ms: u64,
    /// Oldest segments are deleted while the partition is larger than this; -1: no limit.
    pub retention_bytes: i64,
    /// Segments whose newest record is older than this are deleted; -1: no limit.
    pub retention_ms: i64,
    /// One sparse index entry per this many bytes of log.
    pub index_interval_bytes: u64,
    /// A segment is rolled once its offset index would pass this size (8 bytes an entry, as
    /// Kafka's `segment.index.bytes` counts).
    pub segment_index_bytes: u64,
    /// A segment deleted by retention or DeleteRecords leaves the log at once and its files
    /// are removed this long after (renamed `*.deleted` meanwhile; Kafka's
    /// `file.delete.delay.ms`). 0: removed at once (Spate's readers keep their file open, so
    /// an unlinked segment stays readable to them).
    pub file_delete_delay_ms: u64,
    /// Segment files grow by preallocation steps of this size.
    pub preallocate_bytes: u64,
    /// Appends waiting to be written, per partition; further appends wait (backpressure).
    pub max_pending_bytes: u64,
    /// Largest single write of the group commit.
    pub max_write_bytes: u64,
    /// Data appended without a durable ack is fdatasynced at the latest after this long.
    pub flush_interval_ms: u64,
    /// How often each shard applies retention.
    pub retention_check_ms: u64,
    /// What one durable sync covers: "file" (an fdatasync per partition), "filesystem" (one
    /// syncfs per shard covers all its partitions) or "auto". See `log::sync_group`.
    pub sync_scope: SyncScope,
    /// Closed segments go to the cold tier (a topic's `remote.storage.enable`, on a broker
    /// with a tier). Set per partition by the owner, never in the broker's file.
    #[serde(skip)]
    pub remote_storage: bool,
    /// The partition's prefix in the cold tier (unique to the topic's incarnation).
    #[serde(skip)]
    pub remote_key: String,
    /// No more uploads (a topic's `remote.log.copy.disable`): what the tier holds stays
    /// readable and under retention; the owner sets local retention to the whole log's.
    #[serde(skip)]
    pub remote_copy_disabled: bool,
    /// With a cold tier: bytes and age of the local copy beyond which uploaded segments are
    /// deleted locally (-1: no limit). Retention (`retention_*`) bounds the whole log.
    #[serde(skip)]
    pub local_retention_bytes: i64,
    #[serde(skip)]
    pub local_retention_ms: i64,
    /// How the partition is compacted (a topic with `cleanup.policy=compact`); `None`: it
    /// is not. Set per partition by the owner, never in the broker's file.
    #[serde(skip)]
    pub compaction: Option<crate::compaction::CompactionPolicy>,
    /// The shard cleaner's memory, I/O rate and pause (`[log.cleaner]`).
    pub cleaner: crate::compaction::CleanerConfig,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: GIB,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            retention_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 4 * KIB,
            segment_index_bytes: 10 * MIB,
            file_delete_delay_ms: 0,
            preallocate_bytes: 32 * MIB,
            max_pending_bytes: 64 * MIB,
            max_write_bytes: 16 * MIB,
            flush_interval_ms: 1000,
            retention_check_ms: 60_000,
            sync_scope: SyncScope::Auto,
            remote_storage: false,
            remote_key: String::new(),
            remote_copy_disabled: false,
            local_retention_bytes: -1,
            local_retention_ms: -1,
            compaction: None,
            cleaner: crate::compaction::CleanerConfig::default(),
        }
    }
}

impl LogConfig {
    /// The preallocation step of a segment file: `preallocate_bytes`, but no more than a
    /// segment holds (a topic of 1 MiB segments does not reserve 32 MiB for each).
    pub fn preallocate_step(&self) -> u64 {
        self.preallocate_bytes
            .min(crate::io::align_up(self.segment_bytes.max(1)))
    }

    /// Rejects settings the engine cannot work with, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 64 * KIB {
            return Err(format!(
                "log.segment_bytes = {} is below the minimum of 65536",
                self.segment_bytes
            ));
        }
        if self.segment_bytes > u32::MAX as u64 {
            return Err(format!(
                "log.segment_bytes = {} is above the maximum of 4294967295",
                self.segment_bytes
            ));
        }
        if self.index_interval_bytes == 0 {
            return Err("log.index_interval_bytes must be at least 1".into());
        }
        if self.max_pending_bytes < MIB {
            return Err("log.max_pending_bytes must be at least 1048576".into());
        }
        if self.max_write_bytes < 64 * KIB {
            return Err("log.max_write_bytes must be at least 65536".into());
        }
        if self.retention_bytes < -1 || self.retention_ms < -1 {
            return Err(
                "log.retention_bytes and log.retention_ms must be -1 (no limit) or positive".into(),
            );
        }
        if self.cleaner.dedupe_buffer_bytes < MIB {
            return Err("log.cleaner.dedupe_buffer_bytes must be at least 1048576".into());
        }
        if self.flush_interval_ms == 0 || self.retention_check_ms == 0 {
            return Err(
                "log.flush_interval_ms and log.retention_check_ms must be at least 1".into(),
            );
        }
        Ok(())
    }
}

/// Settings of the data disk as a whole (`[storage]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Produce is refused (a retriable error) while the data disk has less free space than
    /// this, and accepted again once it has more. See `crate::space`.
    pub min_free_bytes: MinFreeBytes,
}

/// `storage.min_free_bytes`: a byte count, or "auto" (the smaller of 1 GiB and 5% of the
/// data disk, decided at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MinFreeBytes {
    #[default]
    Auto,
    Bytes(u64),
}

/// The "auto" floor: at most this much...
pub const AUTO_MIN_FREE_BYTES_MAX: u64 = GIB;
/// ...and at most this percentage of the data disk.
pub const AUTO_MIN_FREE_PERCENT: u64 = 5;

impl MinFreeBytes {
    /// The floor in bytes on a disk of `disk_bytes`.
    pub fn resolve(self, disk_bytes: u64) -> u64 {
        match self {
            MinFreeBytes::Bytes(b) => b,
            MinFreeBytes::Auto => {
                AUTO_MIN_FREE_BYTES_MAX.min(disk_bytes / 100 * AUTO_MIN_FREE_PERCENT)
            }
        }
    }
}

impl Serialize for MinFreeBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            MinFreeBytes::Auto => s.serialize_str("auto"),
            MinFreeBytes::Bytes(b) => s.serialize_u64(*b),
        }
    }
}

impl<'de> Deserialize<'de> for MinFreeBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MinFreeBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number of bytes (0 or more) or \"auto\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<MinFreeBytes, E> {
                Ok(MinFreeBytes::Bytes(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<MinFreeBytes, E> {
                u64::try_from(v).map(MinFreeBytes::Bytes).map_err(|_| {
                    E::custom(format!(
                        "{v} is negative; expected a number of bytes (0 or more) or \"auto\""
                    ))
                })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MinFreeBytes, E> {
                if v == "auto" {
                    Ok(MinFreeBytes::Auto)
                } else {
                    Err(E::custom(format!(
                        "{v:?}: expected a number of bytes (0 or more) or \"auto\""
                    )))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// How an acks=all append is made durable: the `log.sync_scope` setting (resolved and described
/// in `log::sync_group`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SyncScope {
    /// `filesystem` when the data directory is the root of its own filesystem (a data disk of
    /// its own) and the kernel reports syncfs errors; `file` otherwise.
    #[default]
    Auto,
    /// One `syncfs` per shard covers every partition written since the last one.
    Filesystem,
    /// Each partition fdatasyncs its own segment file.
    File,
}
