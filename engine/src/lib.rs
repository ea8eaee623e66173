//! spate-engine: the log engine of Spate. It stores opaque batches in partition logs made of
//! direct-I/O segment files, with group commit, sparse indexes, a batch cache, recovery and
//! retention. It knows nothing of Kafka: the network layer hands it payloads and offsets.
//!
//! Everything here runs inside one glommio executor per shard; nothing is shared between
//! shards.

pub mod atomic_file;
pub mod cache;
pub mod compaction;
pub mod config;
pub mod copies;
pub mod error;
pub mod failpoint;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod io;
pub mod log;
pub mod log_limit;
pub mod readahead_budget;
pub mod registry;
pub mod shard;
pub mod space;
pub mod tier;

use bytes::Bytes;

pub use config::LogConfig;
pub use error::{EngineError, Result};
pub use log::partition::{
    AppendBatch, AppendResult, Appending, LogOffsets, LogStats, PartitionLog,
};
pub use log::read::ReadBound;
pub use log::recovery::RecoveryReport;
pub use log::tiered::{TierProgress, TierRole, TierStatus};
pub use registry::{partition_dir, topic_dir, AssignedPartition};

/// When an append resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once written to the log file (readable; survives a process crash, not a power loss).
    Appended,
    /// Once an fdatasync covers it (survives a power loss).
    Durable,
}

/// A batch as readers get it: its offsets and timestamps, and the payload as stored, with one
/// exception: a batch served from the cache still holds the appender's bytes in its base
/// offset field (see `AppendBatch::base_offset_field`), because patching it would mean a
/// copy. `base_offset` is authoritative; readers that serve the field write it themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBatch {
    pub base_offset: u64,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub leader_epoch: i32,
    pub payload: Bytes,
}

impl ReadBatch {
    pub fn from_frame(h: &frame::FrameHeader, payload: Bytes) -> Self {
        Self {
            base_offset: h.base_offset,
            record_count: h.record_count,
            first_timestamp_ms: h.first_timestamp_ms,
            max_timestamp_ms: h.max_timestamp_ms,
            leader_epoch: h.leader_epoch,
            payload,
        }
    }

    /// Offset after the batch's last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}
