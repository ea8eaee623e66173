//! The log of one partition: its state and handle, open (with recovery) and a clean close.
//! The rest of its behaviour lives beside it, one concept a file: `enqueue.rs` (queueing
//! appends), `write.rs` (the group-commit flush loop), `failure.rs` (full disk, fatal errors), `roll.rs` (sealing a segment, index tails, the recovery
//! checkpoint), `read.rs` (reads and waits for data), `timestamps.rs` (lookups by time),
//! `retention.rs` (retention, DeleteRecords and the log start).
//!
//! Concurrency contract: a `PartitionLog` lives on one shard and is used from that shard's
//! tasks only (it is `!Send`). Offsets are assigned synchronously when `append` enqueues, so
//! the order of appends is the order of calls. One flush task at a time takes every pending
//! frame, writes them in one O_DIRECT write, fdatasyncs if any of them asked for durability,
//! and resolves them; appends arriving meanwhile gather for the next round (group commit).
//! Flushes of different partitions are independent tasks, so their I/O overlaps.
//! After a sync error, or a write error other than a full disk, the partition fails every
//! pending append and refuses writes until it is reopened: nothing that was not durable is
//! ever acknowledged as durable. A write that finds no space (ENOSPC) leaves the log as it
//! was before that write (the file is cut back to the last written frame, the in-memory
//! indexes too): its appends and those queued behind it are refused as `DiskFull`, and the
//! partition takes writes again once there is space. Below `storage.min_free_bytes` appends
//! are refused before they are queued (see `crate::space`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::sync::Semaphore;

use crate::cache::BatchCache;
use crate::config::LogConfig;
use crate::error::{EngineError, Result};
use crate::io::Storage;
pub use crate::log::enqueue::Appending;
use crate::log::epochs::{self, EpochEntry, EpochIndex};
use crate::log::pending::PendingQueue;
use crate::log::readahead::ReadAhead;
use crate::log::recovery::{self, RecoveryReport};
use crate::log::retention::{log_start, read_start_floor};
use crate::log::segment::Segment;
use crate::log::sync_group::SyncGroup;
use crate::space::DiskSpace;

/// One batch to append.
#[derive(Debug)]
pub struct AppendBatch {
    /// The bytes to store. Never copied before the write into the aligned buffer: the
    /// batch cache keeps this very `Bytes`.
    pub payload: Bytes,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    pub leader_epoch: i32,
    /// If set, the assigned base offset is written big-endian (i64) at this payload position
    /// in the stored frame (Kafka's RecordBatch keeps its base offset there). The patch is
    /// applied while the payload is copied to the write buffer; the cached `Bytes` keeps the
    /// caller's value there (see [`ReadBatch`]).
    pub base_offset_field: Option<usize>,
}

impl AppendBatch {
    /// A batch of `record_count` records with no timestamps and no offset field.
    pub fn opaque(payload: Bytes, record_count: u32) -> Self {
        Self {
            payload,
            record_count,
            first_timestamp_ms: -1,
            max_timestamp_ms: -1,
            leader_epoch: 0,
            base_offset_field: None,
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    pub base_offset: u64,
    /// Offset of the last record appended.
    pub last_offset: u64,
}

pub(super) struct State {
    pub(super) segments: BTreeMap<u64, Segment>,
    /// Next offset to assign.
    pub(super) next_offset: u64,
    /// Offsets below this are written (visible to readers).
    pub(super) written_offset: u64,
    /// Offsets below this are durable (fdatasynced).
    pub(super) durable_offset: u64,
    pub(super) pending: PendingQueue,
    pub(super) flushing: bool,
    /// Wakes the flush loop when it waits for an fdatasync and new appends arrive.
    pub(super) flush_wakeup: Option<oneshot::Sender<()>>,
    /// When the armed periodic fdatasync (`flush_interval_ms` after an unsynced write) fires,
    /// if one is armed. A shorter interval set meanwhile arms an earlier one.
    pub(super) sync_timer_due: Option<Instant>,
    /// An fdatasync was asked for (`request_sync`) while the flush loop ran: it runs once
    /// the loop ends, rather than at the periodic timer.
    pub(super) sync_requested: bool,
    pub(super) failed: Option<String>,
    pub(super) closed: bool,
    pub(super) idle_waiters: Vec<oneshot::Sender<()>>,
    /// Readers waiting for the log end to move (long polls).
    pub(super) data_waiters: Vec<oneshot::Sender<()>>,
    /// Offsets below this were deleted by `delete_records` (persisted in `START_FILE`).
    pub(super) start_floor: u64,
    /// Offsets below this are visible to consumers (see [`LogOffsets::high_watermark`]).
    pub(super) high_watermark: u64,
    /// The high watermark is set by the log's owner (replication), not by the writes.
    pub(super) hw_managed: bool,
    /// Readers waiting for the high watermark to move (consumers' long polls).
    pub(super) hw_waiters: Vec<oneshot::Sender<()>>,
    /// Leader epochs of the log, the queued appends' included.
    pub(super) epochs: EpochIndex,
    /// The index as last saved in its file.
    pub(super) epochs_on_disk: EpochIndex,
    /// A `truncate_suffix` runs: appends are refused.
    pub(super) truncating: bool,
    /// The segments in the cold tier, as its manifest lists them (empty without a tier).
    pub(super) remote: crate::tier::Manifest,
}

impl State {
    /// Moves the high watermark (never past the written log end) and wakes its waiters.
    pub(super) fn set_high_watermark(&mut self, offset: u64) {
        debug_assert!(
            offset <= self.written_offset,
            "high watermark past the log end"
        );
        let offset = offset.min(self.written_offset);
        if offset != self.high_watermark {
            self.high_watermark = offset;
            for w in self.hw_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    pub(super) fn offsets(&self) -> LogOffsets {
        let log_start = log_start(self);
        let local_start = self
            .segments
            .values()
            .next()
            .map_or(self.written_offset, |s| s.base_offset)
            .max(log_start);
        let o = LogOffsets {
            log_start,
            local_start,
            high_watermark: self.high_watermark,
            log_end: self.written_offset,
            durable: self.durable_offset,
        };
        debug_assert!(o.holds(), "{o:?}");
        o
    }
}

/// Where a partition log starts and ends, and how far it is visible and durable.
///
/// `log_start <= local_start <= log_end`, `high_watermark <= log_end`, `durable <= log_end`.
/// Without a cold tier `log_start == local_start`. Without replication the high watermark
/// follows the log end (what is written is visible, as with Kafka's single replica); with it,
/// the owner sets it (the minimum durable log end of the in-sync replicas).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    /// The first offset served (DeleteRecords and retention move it).
    pub log_start: u64,
    /// The first offset on local disk.
    pub local_start: u64,
    /// Offsets below it are visible to consumers.
    pub high_watermark: u64,
    /// The next offset to be written: every offset below is written.
    pub log_end: u64,
    /// Offsets below it are durable (fdatasynced).
    pub durable: u64,
}

impl LogOffsets {
    /// Whether the invariants between the offsets hold.
    pub fn holds(&self) -> bool {
        self.log_start <= self.local_start
            && self.local_start <= self.log_end
            && self.high_watermark <= self.log_end
            && self.durable <= self.log_end
    }
}

pub(super) struct Inner {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) cache_key: u64,
    pub(super) config: RefCell<LogConfig>,
    pub(super) storage: Rc<dyn Storage>,
    pub(super) cache: Rc<RefCell<BatchCache>>,
    pub(super) readahead: RefCell<ReadAhead>,
    pub(super) pending_budget: Rc<Semaphore>,
    /// The shard's group commit, if durable appends use it (else: one fdatasync each).
    pub(super) sync_group: RefCell<Option<SyncGroup>>,
    /// The data disk's free space: the floor appends are refused below, the preallocation
    /// step, and the reserve small writes fall back on (none: no floor, fixed steps).
    pub(super) space: RefCell<Option<Arc<DiskSpace>>>,
    pub(super) state: RefCell<State>,
    /// The cold tier, if this partition uses one (`log/tiered.rs`).
    pub(super) tier: RefCell<TierLink>,
    /// Offset indexes of remote segments last read, newest first (a few).
    pub(super) remote_indexes: RefCell<Vec<(u64, Rc<crate::log::index::OffsetIndex>)>>,
    /// A tier pass (load, upload, remote retention) runs: the next one waits its turn.
    pub(super) tier_busy: std::cell::Cell<bool>,
    /// Whether this replica writes the tier (the leader) or trims against it.
    pub(super) tier_role: std::cell::Cell<crate::log::tiered::TierRole>,
    /// The leader epoch this replica last loaded the manifest in (and removed orphans) as
    /// the tier's writer; another epoch loads it again first.
    pub(super) tier_claimed: std::cell::Cell<Option<i32>>,
    /// When the leader last removed objects no manifest names.
    pub(super) tier_swept: std::cell::Cell<Option<std::time::Instant>>,
    /// Where compaction stands (`log/clean.rs`).
    pub(super) cleaner: RefCell<crate::log::clean::CleanerState>,
}

/// How a partition stands with the cold tier.
#[derive(Clone, Default)]
pub(super) enum TierLink {
    /// No tier: the log is local only.
    #[default]
    None,
    /// A tier whose manifest is not loaded yet (unreachable so far): nothing is uploaded or
    /// deleted until it is.
    Loading(crate::tier::Tier),
    /// The manifest is loaded: `State::remote` is the tier's.
    Ready(crate::tier::Tier),
}

/// A partition's log. Cheap to clone (a handle).
#[derive(Clone)]
pub struct PartitionLog {
    pub(super) inner: Rc<Inner>,
}

/// Figures about a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    pub log_start_offset: u64,
    /// Next offset a reader can wait for: every offset below is readable.
    pub log_end_offset: u64,
    pub durable_offset: u64,
    pub segments: usize,
    pub size_bytes: u64,
}

impl PartitionLog {
    /// Opens (recovering) or creates the log in `dir`.
    pub async fn open(
        storage: Rc<dyn Storage>,
        dir: &Path,
        name: &str,
        config: LogConfig,
        cache: Rc<RefCell<BatchCache>>,
        cache_key: u64,
    ) -> Result<(PartitionLog, RecoveryReport)> {
        storage
            .create_dir_all(dir)
            .await
            .map_err(|e| EngineError::from_io(e, dir))?;
        let (segments, report) = recovery::recover(&*storage, dir, name, &config).await?;
        let next = segments.values().next_back().map_or(0, |s| s.next_offset);
        let start_floor = read_start_floor(&*storage, dir, next).await?;
        let epochs = open_epochs(&*storage, dir, &segments, next).await;
        let remote = crate::log::tiered::read_manifest_copy(&*storage, dir).await;
        let cleaner = crate::log::clean::read_cleaner_state(&*storage, dir).await;
        let budget = Rc::new(Semaphore::new(config.max_pending_bytes));
        let log = PartitionLog {
            inner: Rc::new(Inner {
                name: name.to_string(),
                dir: dir.to_path_buf(),
                cache_key,
                config: RefCell::new(config),
                storage,
                cache,
                readahead: RefCell::new(ReadAhead::default()),
                pending_budget: budget,
                sync_group: RefCell::new(None),
                space: RefCell::new(None),
                state: RefCell::new(State {
                    segments,
                    next_offset: next,
                    written_offset: next,
                    durable_offset: next,
                    pending: PendingQueue::default(),
                    flushing: false,
                    flush_wakeup: None,
                    sync_timer_due: None,
                    sync_requested: false,
                    failed: None,
                    closed: false,
                    idle_waiters: Vec::new(),
                    data_waiters: Vec::new(),
                    start_floor,
                    high_watermark: next,
                    hw_managed: false,
                    hw_waiters: Vec::new(),
                    epochs_on_disk: epochs.clone(),
                    epochs,
                    truncating: false,
                    remote,
                }),
                tier: RefCell::new(TierLink::None),
                remote_indexes: RefCell::new(Vec::new()),
                tier_busy: std::cell::Cell::new(false),
                tier_role: std::cell::Cell::new(crate::log::tiered::TierRole::Follower),
                tier_claimed: std::cell::Cell::new(None),
                tier_swept: std::cell::Cell::new(None),
                cleaner: RefCell::new(cleaner),
            }),
        };
        Ok((log, report))
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Makes durable appends wait for the shard's group commit (one syncfs covering all the
    /// shard's partitions) instead of an fdatasync of their own segment file.
    pub fn use_sync_group(&self, group: SyncGroup) {
        *self.inner.sync_group.borrow_mut() = Some(group);
    }

    /// Refuses appends while the data disk has less free space than its floor, sizes
    /// preallocation to the space left, and lets checkpoints and index writes fall back on
    /// the disk's reserve.
    pub fn use_disk_space(&self, space: Arc<DiskSpace>) {
        *self.inner.space.borrow_mut() = Some(space);
    }

    pub(super) fn space(&self) -> Option<Arc<DiskSpace>> {
        self.inner.space.borrow().clone()
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    pub fn stats(&self) -> LogStats {
        let st = self.inner.state.borrow();
        LogStats {
            log_start_offset: log_start(&st),
            log_end_offset: st.written_offset,
            durable_offset: st.durable_offset,
            segments: st.segments.len(),
            size_bytes: st.segments.values().map(|s| s.size_bytes).sum(),
        }
    }

    /// Where the log starts and ends, and how far it is visible and durable.
    pub fn offsets(&self) -> LogOffsets {
        self.inner.state.borrow().offsets()
    }

    /// The offset the next append gets: the log end plus what is queued and not yet
    /// written. A follower fetches from here, so that it never asks again for batches it
    /// has queued.
    pub fn next_offset(&self) -> u64 {
        self.inner.state.borrow().next_offset
    }

    /// Hands the high watermark to the log's owner (a replicated partition): from now on it
    /// moves only by [`PartitionLog::advance_high_watermark`], starting at `initial` (at most
    /// the log end).
    pub fn manage_high_watermark(&self, initial: u64) {
        let mut st = self.inner.state.borrow_mut();
        st.hw_managed = true;
        let end = st.written_offset;
        st.high_watermark = initial.min(end);
    }

    /// Moves a managed high watermark forward to `offset`; a lower value is ignored. An
    /// offset past the log end is an error (the owner computed it from replicas that have
    /// what this log does not).
    pub fn advance_high_watermark(&self, offset: u64) -> Result<()> {
        let mut st = self.inner.state.borrow_mut();
        if offset > st.written_offset {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start: log_start(&st),
                log_end: st.written_offset,
            });
        }
        if offset > st.high_watermark {
            st.set_high_watermark(offset);
        }
        Ok(())
    }

    /// The leader epochs of the log and where each starts, oldest first.
    pub fn leader_epochs(&self) -> Vec<EpochEntry> {
        self.inner.state.borrow().epochs.entries().to_vec()
    }

    /// Kafka's OffsetsForLeaderEpoch for `epoch`: the largest epoch at or below it in this log
    /// and the offset where it ends (see [`EpochIndex::end_offset_for`]).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        let st = self.inner.state.borrow();
        st.epochs.end_offset_for(epoch, st.written_offset)
    }

    /// Why the partition refuses writes, if it does.
    pub fn failure(&self) -> Option<String> {
        self.inner.state.borrow().failed.clone()
    }

    /// Waits until no flush is running.
    pub(super) async fn wait_idle(&self) {
        loop {
            let rx = {
                let mut st = self.inner.state.borrow_mut();
                if !st.flushing {
                    return;
                }
                let (tx, rx) = oneshot::channel();
                st.idle_waiters.push(tx);
                rx
            };
            let _ = rx.await;
        }
    }

    /// Flushes everything, makes it durable, trims preallocation and writes the recovery
    /// checkpoint, so the next open starts without scanning. Later appends are refused.
    pub async fn close(&self) -> Result<()> {
        // Refuse new appends first (appenders that never pause would otherwise keep the log
        // from ever being idle), then let the flush loop finish what is queued: only then is
        // the appender free to seal.
        let already = std::mem::replace(&mut self.inner.state.borrow_mut().closed, true);
        self.inner.pending_budget.close();
        self.inner.readahead.borrow_mut().clear();
        self.wait_idle().await;
        if already {
            return Ok(());
        }
        if self.failure().is_some() {
            return Ok(());
        }
        let appender = {
            let mut st = self.inner.state.borrow_mut();
            st.segments
                .values_mut()
                .next_back()
                .and_then(|s| s.active.as_mut())
                .and_then(|a| a.appender.take())
        };
        if let Some(mut app) = appender {
            let path = app.file().path().to_path_buf();
            let r = app.seal().await;
            self.put_back_appender(Some(app));
            r.map_err(|e| EngineError::from_io(e, &path))?;
        }
        let closing = {
            let mut st = self.inner.state.borrow_mut();
            st.durable_offset = st.written_offset;
            st.segments
                .values_mut()
                .next_back()
                .and_then(Segment::take_active)
        };
        // Closed: no append needs the files again, only their indexes on disk. The data is
        // durable by now: a disk too full for the indexes or the checkpoint (even after the
        // reserve) costs the next start a scan of the active segment, not a record.
        if let Some(mut closing) = closing {
            if let Err(e) = self.write_index_tails(&mut closing, true).await {
                if !e.is_disk_full() {
                    return Err(e);
                }
                tracing::warn!(partition = %self.inner.name, "closed without the active segment's last index entries or a checkpoint; the next start scans that segment: {e}");
                return Ok(());
            }
        }
        match self.write_checkpoint(true).await {
            Err(e) if e.is_disk_full() => {
                tracing::warn!(partition = %self.inner.name, "closed without a recovery checkpoint; the next start scans the active segment: {e}");
                Ok(())
            }
            r => r,
        }
    }

    /// Closes a log whose files are about to be removed (its topic is deleted): refuses
    /// appends and waits for the flush in flight, but writes nothing more (no seal, index or
    /// checkpoint). On a full disk, deleting is how space is freed: it must need none.
    pub async fn close_for_removal(&self) {
        self.inner.state.borrow_mut().closed = true;
        self.inner.pending_budget.close();
        self.inner.readahead.borrow_mut().clear();
        self.wait_idle().await;
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<u64> {
        self.inner.state.borrow().segments.keys().copied().collect()
    }

    /// Drops this partition's batches from the shard's cache and its read-ahead (the partition
    /// is going away).
    pub fn drop_cached(&self) {
        self.inner
            .cache
            .borrow_mut()
            .invalidate(self.inner.cache_key);
        self.inner.readahead.borrow_mut().clear();
    }

    /// Replaces the partition's settings (segment size and age, retention); they apply from
    /// the next append and the next retention pass.
    pub fn set_config(&self, config: LogConfig) {
        *self.inner.config.borrow_mut() = config;
    }

    pub fn config(&self) -> LogConfig {
        self.inner.config.borrow().clone()
    }

    /// Time since the active segment was created (for tests and figures).
    pub fn active_segment_age(&self) -> Duration {
        self.inner
            .state
            .borrow()
            .segments
            .values()
            .next_back()
            .map_or(Duration::ZERO, |s| s.created_at.elapsed())
    }

    #[doc(hidden)]
    pub fn set_active_segment_created_at(&self, at: Instant) {
        if let Some(s) = self
            .inner
            .state
            .borrow_mut()
            .segments
            .values_mut()
            .next_back()
        {
            s.created_at = at;
        }
    }
}

/// The leader-epoch index at open: the saved one without entries at or past the recovered log
/// end (their frames never reached the disk). A log without one (written before the index
/// existed, or whose file is damaged) gets one entry, for the epoch of its first frame.
async fn open_epochs(
    storage: &dyn Storage,
    dir: &Path,
    segments: &BTreeMap<u64, Segment>,
    log_end: u64,
) -> EpochIndex {
    if let Some(mut index) = epochs::read(storage, dir).await {
        index.truncate_from(log_end);
        return index;
    }
    let mut index = EpochIndex::default();
    if let Some(first) = segments.values().find(|s| s.size_bytes > 0) {
        if let Ok(bytes) = first.file.read_at(0, crate::frame::FRAME_HEADER_LEN).await {
            if let Ok(h) = crate::frame::FrameHeader::decode(&bytes) {
                index.assign(h.leader_epoch, first.base_offset);
            }
        }
    }
    index
}
