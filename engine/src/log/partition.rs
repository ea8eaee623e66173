//! The log of one partition: its state and handle, open (with recovery) and a clean close.
//! The rest of its behaviour lives beside it, one concept a file: `write.rs` (appends and
//! the group-commit flush loop), `roll.rs` (sealing a segment, index tails, the recovery
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
use crate::log::pending::PendingQueue;
use crate::log::readahead::ReadAhead;
use crate::log::recovery::{self, RecoveryReport};
use crate::log::retention::{log_start, read_start_floor};
use crate::log::segment::Segment;
use crate::log::sync_group::SyncGroup;
pub use crate::log::write::Appending;
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
    pub(super) sync_timer_armed: bool,
    pub(super) failed: Option<String>,
    pub(super) closed: bool,
    pub(super) idle_waiters: Vec<oneshot::Sender<()>>,
    /// Readers waiting for the log end to move (long polls).
    pub(super) data_waiters: Vec<oneshot::Sender<()>>,
    /// Offsets below this were deleted by `delete_records` (persisted in `START_FILE`).
    pub(super) start_floor: u64,
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
        let start_floor = read_start_floor(&*storage, dir).await;
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
                    sync_timer_armed: false,
                    failed: None,
                    closed: false,
                    idle_waiters: Vec::new(),
                    data_waiters: Vec::new(),
                    start_floor,
                }),
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
