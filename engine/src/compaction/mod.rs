//! Log compaction as an engine capability: a partition whose topic is compacted keeps only
//! the last record of each key (Kafka's log cleaner). The engine knows keys only as opaque
//! bytes, handed to it by a [`RecordKeys`] hook that the owner of the payload format (net,
//! for Kafka record batches) provides; it never parses a payload itself.
//!
//! What is here: the hook, the settings of a compacted partition ([`CompactionPolicy`]), the
//! broker-wide cleaner settings ([`CleanerConfig`]), the bounded key -> last offset map of a
//! pass ([`offset_map`]), a frame's keys held for a pass's sliced work ([`frame_keys`]) and
//! the I/O throttle ([`throttle`]). The pass itself is
//! `log/clean.rs`; the crash-safe swap of cleaned segments into the log is `log/swap.rs`;
//! picking the dirtiest partition of a shard is the registry's `clean_pass`.

pub mod frame_keys;
pub mod offset_map;
pub mod throttle;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One record of a payload, as compaction sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyedRecord<'a> {
    pub offset: u64,
    /// `None`: a record without a key (compaction drops it, as Kafka's cleaner does).
    pub key: Option<&'a [u8]>,
    /// A record without a value: it deletes its key.
    pub tombstone: bool,
    pub timestamp_ms: i64,
}

/// What is left of a payload once compaction dropped some of its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retained {
    /// Every record stays: the payload is kept as it is.
    All,
    /// No record stays: the frame goes.
    Nothing,
    /// A new payload holding the kept records at their offsets (the frame keeps its base
    /// offset and offset span, so offsets never change), with its timestamps.
    Some {
        payload: Bytes,
        first_timestamp_ms: i64,
        max_timestamp_ms: i64,
    },
    /// The frame must stay whole although none of its records do (a marker its format
    /// needs, such as a transaction's control batch): kept as it is.
    Marker,
}

/// The owner's knowledge of its payload format: the keys of a frame's records, and a
/// payload rewritten without some of them. Errors are the payload's (it does not decode):
/// a pass that meets one stops and keeps the log as it was.
pub trait RecordKeys {
    /// Calls `each` for every record of the frame at `base_offset`, in offset order.
    fn records(
        &self,
        base_offset: u64,
        payload: &[u8],
        each: &mut dyn FnMut(KeyedRecord<'_>),
    ) -> Result<(), String>;

    /// The frame at `base_offset` keeping only the records `keep` says yes to (asked once
    /// per record, in offset order).
    fn retain(
        &self,
        base_offset: u64,
        payload: &Bytes,
        keep: &mut dyn FnMut(KeyedRecord<'_>) -> bool,
    ) -> Result<Retained, String>;
}

/// Parts per million: the unit of [`CompactionPolicy::min_cleanable_dirty_ppm`] (a ratio kept
/// as an integer so that the settings compare exactly).
pub const PPM: u64 = 1_000_000;

/// How a compacted partition is cleaned (a topic's compaction settings, Kafka's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionPolicy {
    /// `min.cleanable.dirty.ratio`, in parts per million: a partition is cleaned once its
    /// dirty bytes are at least this share of its cleanable bytes.
    pub min_cleanable_dirty_ppm: u64,
    /// `min.compaction.lag.ms`: a record stays uncompacted at least this long (whole
    /// segments: one whose newest record is younger is not cleaned yet).
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a partition whose oldest dirty segment is older than this is
    /// cleaned whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: a tombstone stays this long after its timestamp (so a reader
    /// from the start sees the delete), then goes at the next pass.
    pub delete_retention_ms: i64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        Self {
            min_cleanable_dirty_ppm: PPM / 2,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}

/// The cleaner of a shard (the `[log]` table's `cleaner_*` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanerConfig {
    /// Memory of one pass's key -> offset map (Kafka's `log.cleaner.dedupe.buffer.size`,
    /// per shard here): a pass covers the dirty records whose keys fit.
    pub dedupe_buffer_bytes: u64,
    /// Bytes read and written per second by a shard's cleaner (Kafka's
    /// `log.cleaner.io.max.bytes.per.second`); 0: unthrottled.
    pub io_max_bytes_per_second: u64,
    /// Pause between passes when no partition needs cleaning (`log.cleaner.backoff.ms`).
    pub backoff_ms: u64,
}

impl Default for CleanerConfig {
    fn default() -> Self {
        Self {
            dedupe_buffer_bytes: 64 * crate::config::MIB,
            io_max_bytes_per_second: 0,
            backoff_ms: 15_000,
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanReport {
    pub segments_in: usize,
    pub segments_out: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub records_read: u64,
    pub records_kept: u64,
    pub tombstones_dropped: u64,
    /// Offsets below this are clean after the pass (the next pass's map starts here).
    pub clean_to: u64,
    /// When the first tombstone the pass kept is `delete.retention.ms` old (none kept: `None`).
    pub tombstones_due_ms: Option<i64>,
    /// The longest the pass held its shard's core in one go (CPU time between two chances
    /// for the shard's other work): about what a request that arrived meanwhile waited.
    pub longest_step: std::time::Duration,
}

/// How a compacted partition stands, for `topic describe` and the scheduler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirtyState {
    /// Bytes of closed segments at or past the first dirty offset (cleanable now).
    pub dirty_bytes: u64,
    /// Bytes of closed segments below it.
    pub clean_bytes: u64,
    /// The oldest dirty segment's newest timestamp (`i64::MAX`: none).
    pub oldest_dirty_ms: i64,
    /// When the last pass finished (ms since the epoch; 0: never since start).
    pub last_cleaned_ms: i64,
}

impl DirtyState {
    /// Dirty bytes as parts per million of the cleanable bytes (0 when there are none).
    pub fn dirty_ppm(&self) -> u64 {
        let total = self.dirty_bytes + self.clean_bytes;
        if total == 0 {
            return 0;
        }
        ((u128::from(self.dirty_bytes) * u128::from(PPM)) / u128::from(total)) as u64
    }
}
