//! The log of one partition: its segments, the append path with group commit, reads,
//! lookups by time, roll, retention, recovery at open and a clean close.
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
use crate::frame::{FrameHeader, FrameMeta, FRAME_HEADER_LEN, FRAME_PAYLOAD_MAX_BYTES};
use crate::io::Storage;
use crate::log::checkpoint::{self, RecoveryCheckpoint};
use crate::log::pending::{Pending, PendingQueue};
use crate::log::readahead::ReadAhead;
use crate::log::recovery::{self, RecoveryReport};
use crate::log::segment::{self, Segment};
use crate::log::sync_group::SyncGroup;
use crate::space::DiskSpace;
use crate::{Durability, ReadBatch};

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

/// While an fdatasync is in flight, frames that all wait for durability are written only
/// once this many bytes are pending; fewer wait for the fdatasync to finish and go out with
/// what arrives meanwhile. Appenders that wait for their ack before appending again (64
/// tasks of 16 KiB each) then share one write and one fdatasync instead of splitting into two
/// halves that alternate: 950 against 830 MiB/s on the development VM.
const PIPELINE_WRITE_BYTES: u64 = 1024 * 1024;

/// Batches queued by [`PartitionLog::enqueue`]: their offsets are assigned; `wait` resolves
/// when they are written (or durable, as asked).
pub struct Appending {
    log: PartitionLog,
    result: AppendResult,
    done: oneshot::Receiver<Result<()>>,
}

impl Appending {
    /// The offsets the batches were given.
    pub fn offsets(&self) -> AppendResult {
        self.result
    }

    pub async fn wait(self) -> Result<AppendResult> {
        match self.done.await {
            Ok(Ok(())) => Ok(self.result),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.log.failed_error()),
        }
    }
}

/// An fdatasync in flight. Its task resolves the appends it covers as soon as it returns
/// (not when the flush loop next looks), and yields whether it succeeded.
struct InflightSync {
    task: glommio::Task<bool>,
}

struct State {
    segments: BTreeMap<u64, Segment>,
    /// Next offset to assign.
    next_offset: u64,
    /// Offsets below this are written (visible to readers).
    written_offset: u64,
    /// Offsets below this are durable (fdatasynced).
    durable_offset: u64,
    pending: PendingQueue,
    flushing: bool,
    /// Wakes the flush loop when it waits for an fdatasync and new appends arrive.
    flush_wakeup: Option<oneshot::Sender<()>>,
    sync_timer_armed: bool,
    failed: Option<String>,
    closed: bool,
    idle_waiters: Vec<oneshot::Sender<()>>,
    /// Readers waiting for the log end to move (long polls).
    data_waiters: Vec<oneshot::Sender<()>>,
    /// Offsets below this were deleted by `delete_records` (persisted in `START_FILE`).
    start_floor: u64,
}

struct Inner {
    name: String,
    dir: PathBuf,
    cache_key: u64,
    config: RefCell<LogConfig>,
    storage: Rc<dyn Storage>,
    cache: Rc<RefCell<BatchCache>>,
    readahead: RefCell<ReadAhead>,
    pending_budget: Rc<Semaphore>,
    /// The shard's group commit, if durable appends use it (else: one fdatasync each).
    sync_group: RefCell<Option<SyncGroup>>,
    /// The data disk's free space: the floor appends are refused below, the preallocation
    /// step, and the reserve small writes fall back on (none: no floor, fixed steps).
    space: RefCell<Option<Arc<DiskSpace>>>,
    state: RefCell<State>,
}

/// Why a write step failed: a full disk leaves the log's state known and writable later;
/// anything else fails the partition.
enum WriteFault {
    NoSpace(EngineError),
    Fatal(EngineError),
}

impl WriteFault {
    /// Sorts a write or allocation error (never a sync error: those are always fatal).
    fn of_write(e: EngineError) -> Self {
        if e.is_disk_full() {
            WriteFault::NoSpace(e)
        } else {
            WriteFault::Fatal(e)
        }
    }
}

/// A copy of a disk-full error for each refused append.
fn disk_full_copy(e: &EngineError) -> EngineError {
    match e {
        EngineError::DiskFull { path, detail } => EngineError::DiskFull {
            path: path.clone(),
            detail: detail.clone(),
        },
        other => EngineError::DiskFull {
            path: PathBuf::new(),
            detail: other.to_string(),
        },
    }
}

/// A partition's log. Cheap to clone (a handle).
#[derive(Clone)]
pub struct PartitionLog {
    inner: Rc<Inner>,
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

    fn space(&self) -> Option<Arc<DiskSpace>> {
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

    /// Appends `batches` in order; resolves per `durability`. The batches get consecutive
    /// offsets unless another append interleaves while this one waits for buffer space.
    pub async fn append(
        &self,
        batches: Vec<AppendBatch>,
        durability: Durability,
    ) -> Result<AppendResult> {
        self.enqueue(batches, durability).await?.wait().await
    }

    /// The first half of [`PartitionLog::append`]: waits for buffer space and queues the
    /// batches, which then have their offsets (the order of `enqueue` calls is log order).
    /// The returned [`Appending`] resolves per `durability`. A caller that queues appends
    /// from several requests in order and waits for them concurrently keeps their order.
    pub async fn enqueue(
        &self,
        batches: Vec<AppendBatch>,
        durability: Durability,
    ) -> Result<Appending> {
        if batches.is_empty() {
            return Err(EngineError::InvalidAppend("no batches".into()));
        }
        let max_frame = self
            .inner
            .config
            .borrow()
            .segment_bytes
            .min(u64::from(FRAME_PAYLOAD_MAX_BYTES));
        for b in &batches {
            if b.record_count == 0 {
                return Err(EngineError::InvalidAppend(
                    "a batch must hold at least one record".into(),
                ));
            }
            if (b.payload.len() + FRAME_HEADER_LEN) as u64 > max_frame {
                return Err(EngineError::InvalidAppend(format!(
                    "batch of {} bytes is larger than the segment size limit of {} bytes",
                    b.payload.len(),
                    max_frame
                )));
            }
            if let Some(at) = b.base_offset_field {
                if at + 8 > b.payload.len() {
                    return Err(EngineError::InvalidAppend(
                        "base offset field lies outside the payload".into(),
                    ));
                }
            }
        }
        self.check_writable()?;
        if let Some(space) = self.space() {
            let bytes = batches
                .iter()
                .map(|b| (b.payload.len() + FRAME_HEADER_LEN) as u64)
                .sum();
            space.admit_append(bytes)?;
        }
        let mut permits = Vec::with_capacity(batches.len());
        for b in &batches {
            let units = ((b.payload.len() + FRAME_HEADER_LEN) as u64)
                .min(self.inner.config.borrow().max_pending_bytes);
            let permit = self
                .inner
                .pending_budget
                .acquire_static_permit(units)
                .await
                .map_err(|_| EngineError::Closed)?;
            permits.push(permit);
        }
        self.check_writable()?;
        let (tx, rx) = oneshot::channel();
        let result = {
            let mut st = self.inner.state.borrow_mut();
            let base = st.next_offset;
            let count = batches.len();
            let mut tx = Some(tx);
            for (i, (b, permit)) in batches.into_iter().zip(permits).enumerate() {
                let offset = st.next_offset;
                let offset_patch = b
                    .base_offset_field
                    .map(|at| (at, (offset as i64).to_be_bytes()));
                let payload = b.payload;
                let header = FrameHeader::new_chunks(
                    FrameMeta {
                        base_offset: offset,
                        record_count: b.record_count,
                        first_timestamp_ms: b.first_timestamp_ms,
                        max_timestamp_ms: b.max_timestamp_ms,
                        leader_epoch: b.leader_epoch,
                    },
                    &patched_chunks(&payload, offset_patch.as_ref()),
                );
                st.next_offset = header.next_offset();
                st.pending.push(Pending {
                    header,
                    payload,
                    offset_patch,
                    durability,
                    waiter: if i + 1 == count { tx.take() } else { None },
                    _permit: permit,
                });
            }
            AppendResult {
                base_offset: base,
                last_offset: st.next_offset - 1,
            }
        };
        self.start_flush();
        Ok(Appending {
            log: self.clone(),
            result,
            done: rx,
        })
    }

    fn check_writable(&self) -> Result<()> {
        let st = self.inner.state.borrow();
        if st.closed {
            return Err(EngineError::Closed);
        }
        if let Some(reason) = &st.failed {
            return Err(EngineError::PartitionFailed {
                partition: self.inner.name.clone(),
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    fn failed_error(&self) -> EngineError {
        let reason = self
            .inner
            .state
            .borrow()
            .failed
            .clone()
            .unwrap_or_else(|| "append abandoned".into());
        EngineError::PartitionFailed {
            partition: self.inner.name.clone(),
            reason,
        }
    }

    fn start_flush(&self) {
        let mut st = self.inner.state.borrow_mut();
        if let Some(wake) = st.flush_wakeup.take() {
            let _ = wake.send(());
        }
        if !st.flushing {
            st.flushing = true;
            drop(st);
            let log = self.clone();
            glommio::spawn_local(async move { log.flush_loop(false).await }).detach();
        }
    }

    /// The group-commit loop: runs while there is pending work. Writes and fdatasyncs are
    /// pipelined: while one fdatasync is in flight, the rounds that arrive are written (at
    /// once if any of them is acked on write, else once [`PIPELINE_WRITE_BYTES`] wait), and
    /// the next fdatasync covers all of them. One fdatasync at a time, each covering every
    /// write completed before it started; its task acks what it covers as soon as it
    /// returns. After a failed one, nothing is acked again.
    async fn flush_loop(self, mut force_sync: bool) {
        let mut inflight: Option<InflightSync> = None;
        // Written rounds whose appends wait for an fdatasync not started yet.
        let mut unsynced: Vec<Pending> = Vec::new();
        let mut need_sync = false;
        let mut last_file: Option<Rc<dyn crate::io::StorageFile>> = None;
        loop {
            // Reap a finished fdatasync (its task has resolved its appends already).
            if let Some(mut s) = inflight.take() {
                if futures_lite::future::poll_once(&mut s.task).await.is_none() {
                    inflight = Some(s);
                }
            }
            if self.failure().is_some() {
                if let Some(s) = inflight.take() {
                    s.task.await;
                }
                let (reason, pending) = {
                    let mut st = self.inner.state.borrow_mut();
                    let reason = st.failed.clone().unwrap_or_default();
                    (reason, st.pending.take_all())
                };
                self.fail_waiters(unsynced.drain(..).chain(pending).collect(), &reason);
                break;
            }
            if inflight.is_none() && need_sync {
                if let Some(file) = last_file.clone() {
                    inflight = Some(self.start_sync(file, std::mem::take(&mut unsynced)));
                    need_sync = false;
                }
            }
            let (idle, roll_needed, hold) = {
                let st = self.inner.state.borrow();
                // While an fdatasync runs, a few durable frames are held back rather than
                // written alone: they could not be acked before the next fdatasync anyway,
                // and appends arriving meanwhile join them in one larger write.
                let hold = inflight.is_some()
                    && st.pending.all_durable()
                    && st.pending.bytes() < PIPELINE_WRITE_BYTES;
                (
                    st.pending.is_empty() && !force_sync,
                    self.roll_needed(&st),
                    hold,
                )
            };
            if roll_needed {
                // A roll seals the segment: let the fdatasync in flight finish first.
                if let Some(s) = inflight.take() {
                    s.task.await;
                    continue;
                }
                if need_sync {
                    continue;
                }
                if idle {
                    break;
                }
            } else if idle || hold {
                let Some(mut s) = inflight.take() else {
                    if need_sync {
                        continue;
                    }
                    break;
                };
                // Nothing to write yet: wait for the fdatasync in flight or for new appends,
                // whichever comes first.
                let (tx, rx) = oneshot::channel();
                self.inner.state.borrow_mut().flush_wakeup = Some(tx);
                if let futures_util::future::Either::Right(_) =
                    futures_util::future::select(&mut s.task, rx).await
                {
                    inflight = Some(s);
                }
                self.inner.state.borrow_mut().flush_wakeup = None;
                continue;
            }
            if roll_needed {
                match self.roll().await {
                    Ok(()) => {}
                    Err(WriteFault::NoSpace(e)) => {
                        // Tried again at the next append (the last segment has no appender).
                        crate::warn_limited!("roll: disk full", partition = %self.inner.name, "cannot start a new segment: {e}");
                        self.refuse_unwritten(&e, Vec::new());
                        continue;
                    }
                    Err(WriteFault::Fatal(e)) => {
                        self.fail(e, Vec::new());
                        continue;
                    }
                }
            }
            let round = self.take_round();
            let sync = force_sync || round.iter().any(|p| p.durability == Durability::Durable);
            force_sync = false;
            match self.write_round(round).await {
                Ok((round, file)) => {
                    if sync {
                        unsynced.extend(round);
                        need_sync = true;
                        last_file = Some(file);
                    }
                }
                Err(e) if e.is_disk_full() => {
                    crate::warn_limited!("append: disk full", partition = %self.inner.name, "appends refused: {e}")
                }
                Err(e) => tracing::error!(partition = %self.inner.name, "{e}"),
            }
        }
        let mut st = self.inner.state.borrow_mut();
        st.flushing = false;
        let unsynced = st.durable_offset < st.written_offset && st.failed.is_none() && !st.closed;
        for w in st.idle_waiters.drain(..) {
            let _ = w.send(());
        }
        if unsynced && !st.sync_timer_armed {
            st.sync_timer_armed = true;
            drop(st);
            let log = self.clone();
            let delay = Duration::from_millis(self.inner.config.borrow().flush_interval_ms);
            glommio::spawn_local(async move {
                glommio::timer::sleep(delay).await;
                log.inner.state.borrow_mut().sync_timer_armed = false;
                log.sync_now().await;
            })
            .detach();
        }
    }

    /// fdatasyncs written data now (the periodic flush of data appended without durability).
    async fn sync_now(&self) {
        {
            let mut st = self.inner.state.borrow_mut();
            if st.flushing
                || st.closed
                || st.failed.is_some()
                || st.durable_offset >= st.written_offset
            {
                return;
            }
            st.flushing = true;
        }
        self.clone().flush_loop(true).await;
    }

    fn roll_needed(&self, st: &State) -> bool {
        let Some(active) = st.segments.values().next_back() else {
            return true;
        };
        // A roll that found no space for the new segment left the last one closed.
        if active.active.is_none() {
            return true;
        }
        if active.size_bytes == 0 {
            return false;
        }
        let next = st.pending.front().map_or(0, |p| p.len());
        active.size_bytes + next > self.inner.config.borrow().segment_bytes
            || active.created_at.elapsed()
                >= Duration::from_millis(self.inner.config.borrow().segment_ms)
    }

    /// Takes the frames of the next write: as many pending frames as fit in one write and in
    /// the active segment (at least one).
    fn take_round(&self) -> Vec<Pending> {
        let mut st = self.inner.state.borrow_mut();
        let room = st.segments.values().next_back().map_or(0, |s| {
            self.inner
                .config
                .borrow()
                .segment_bytes
                .saturating_sub(s.size_bytes)
        });
        let limit = room.min(self.inner.config.borrow().max_write_bytes);
        let mut round = Vec::new();
        let mut bytes = 0u64;
        while let Some(p) = st.pending.front() {
            if !round.is_empty() && bytes + p.len() > limit {
                break;
            }
            bytes += p.len();
            if let Some(p) = st.pending.pop_front() {
                round.push(p);
            }
        }
        round
    }

    /// Writes a round and makes it readable; resolves its appends that wait only for the
    /// write. Returns the round (for the waiters of its fdatasync) and the file written.
    async fn write_round(
        &self,
        round: Vec<Pending>,
    ) -> Result<(Vec<Pending>, Rc<dyn crate::io::StorageFile>)> {
        let configured_step = self.inner.config.borrow().preallocate_bytes;
        let step = self
            .space()
            .map_or(configured_step, |s| s.preallocate_step(configured_step));
        let (mut appender, file, before) = {
            let mut st = self.inner.state.borrow_mut();
            let Some(active) = st.segments.values_mut().next_back() else {
                drop(st);
                self.fail(EngineError::Closed, round);
                return Err(EngineError::Closed);
            };
            // What the indexes were before this round, to go back to if it finds no space.
            let before = (
                active.size_bytes,
                round
                    .first()
                    .map_or(0, |p| active.relative(p.header.base_offset)),
                active.max_timestamp_ms,
            );
            let mut position = active.size_bytes;
            for p in &round {
                active.index_frame(&p.header, position);
                position += p.len();
            }
            let appender = active.active.as_mut().and_then(|a| a.appender.take());
            (appender, active.file.clone(), before)
        };
        let Some(app) = appender.as_mut() else {
            let e = EngineError::PartitionFailed {
                partition: self.inner.name.clone(),
                reason: "active segment has no appender".into(),
            };
            self.fail(e, round);
            return Err(EngineError::Closed);
        };
        let headers: Vec<[u8; FRAME_HEADER_LEN]> =
            round.iter().map(|p| p.header.encode()).collect();
        let mut chunks: Vec<&[u8]> = Vec::with_capacity(round.len() * 4);
        for (h, p) in headers.iter().zip(&round) {
            chunks.push(h);
            chunks.extend(patched_chunks(&p.payload, p.offset_patch.as_ref()));
        }
        app.set_preallocate_bytes(step);
        let written = app.append(&chunks).await;
        // No space: the pieces of this write that landed are cut off again (with the
        // preallocation, which a full disk needs back), so the file ends at the last frame
        // written before, and the next write goes where this one would have.
        let no_space = match &written {
            Err(e) if crate::space::is_enospc(e) => Some(app.trim().await),
            _ => None,
        };
        let end = app.end();
        self.put_back_appender(appender);
        if let Err(e) = written {
            let e = EngineError::from_io(e, file.path());
            match no_space {
                Some(Ok(())) => {
                    self.unindex_round(before);
                    self.refuse_unwritten(&e, round);
                    return Err(e);
                }
                Some(Err(cut)) => tracing::error!(
                    partition = %self.inner.name,
                    "cannot cut the log back after a write found no space: {cut}"
                ),
                None => {}
            }
            let msg = e.to_string();
            self.fail(e, round);
            return Err(EngineError::PartitionFailed {
                partition: self.inner.name.clone(),
                reason: msg,
            });
        }
        // Written: visible to readers, cached, and acked at "appended" durability.
        let mut round = round;
        {
            let mut st = self.inner.state.borrow_mut();
            if let Some(last) = round.last() {
                st.written_offset = last.header.next_offset();
            }
            let written = st.written_offset;
            if let Some(active) = st.segments.values_mut().next_back() {
                active.size_bytes = end;
                active.next_offset = written;
            }
            for w in st.data_waiters.drain(..) {
                let _ = w.send(());
            }
            let mut cache = self.inner.cache.borrow_mut();
            for p in &round {
                cache.insert(
                    self.inner.cache_key,
                    ReadBatch::from_frame(&p.header, p.payload.clone()),
                );
            }
        }
        for p in round.iter_mut() {
            if p.durability == Durability::Appended {
                if let Some(w) = p.waiter.take() {
                    let _ = w.send(Ok(()));
                }
            }
        }
        Ok((round, file))
    }

    /// Starts an fdatasync of `file` for the appends of `waiters` (written before it starts).
    fn start_sync(
        &self,
        file: Rc<dyn crate::io::StorageFile>,
        waiters: Vec<Pending>,
    ) -> InflightSync {
        let covers = self.inner.state.borrow().written_offset;
        let log = self.clone();
        let group = self.inner.sync_group.borrow().clone();
        let task = glommio::spawn_local(async move {
            let result = match group {
                Some(group) => group.sync(&file).await,
                None => file.fdatasync().await,
            };
            log.complete_sync(waiters, covers, &file, result)
        });
        InflightSync { task }
    }

    /// Resolves the appends an fdatasync covers, or fails them and the partition if it
    /// failed. Returns whether it succeeded.
    fn complete_sync(
        &self,
        mut waiters: Vec<Pending>,
        covers: u64,
        file: &Rc<dyn crate::io::StorageFile>,
        result: std::io::Result<()>,
    ) -> bool {
        match result {
            Ok(()) if self.failure().is_none() => {
                {
                    let mut st = self.inner.state.borrow_mut();
                    st.durable_offset = st.durable_offset.max(covers);
                }
                for p in waiters.iter_mut() {
                    if let Some(w) = p.waiter.take() {
                        let _ = w.send(Ok(()));
                    }
                }
                true
            }
            // After a failed fdatasync a later one may succeed without the data being safe
            // (the kernel dropped the dirty pages): never ack on it.
            Ok(()) => {
                let reason = self.failure().unwrap_or_default();
                self.fail_waiters(waiters, &reason);
                false
            }
            Err(e) => {
                let e = EngineError::from_io(e, file.path());
                tracing::error!(partition = %self.inner.name, "{e}");
                self.fail(e, waiters);
                false
            }
        }
    }

    fn put_back_appender(&self, appender: Option<crate::log::appender::Appender>) {
        let mut st = self.inner.state.borrow_mut();
        if let Some(active) = st
            .segments
            .values_mut()
            .next_back()
            .and_then(|s| s.active.as_mut())
        {
            active.appender = appender;
        }
    }

    /// Takes back the index entries and max timestamp a round added (it was not written).
    fn unindex_round(&self, (position, first_relative, max_timestamp_ms): (u64, u32, i64)) {
        let mut st = self.inner.state.borrow_mut();
        if let Some(active) = st.segments.values_mut().next_back() {
            active.index.truncate_at_position(position);
            active.time_index.truncate_at_offset(first_relative);
            active.max_timestamp_ms = max_timestamp_ms;
        }
    }

    /// Refuses `round` and every append queued behind it, none of them written, after a write
    /// or roll found no space. Their offsets are given out again; the partition stays
    /// writable.
    fn refuse_unwritten(&self, err: &EngineError, round: Vec<Pending>) {
        let pending = {
            let mut st = self.inner.state.borrow_mut();
            st.next_offset = st.written_offset;
            st.pending.take_all()
        };
        for mut p in round.into_iter().chain(pending) {
            if let Some(w) = p.waiter.take() {
                let _ = w.send(Err(disk_full_copy(err)));
            }
        }
    }

    /// Marks the partition failed and fails `round` and everything pending.
    fn fail(&self, err: EngineError, round: Vec<Pending>) {
        let reason = err.to_string();
        tracing::error!(partition = %self.inner.name, "partition refuses writes until restart: {reason}");
        let pending: Vec<Pending> = {
            let mut st = self.inner.state.borrow_mut();
            if st.failed.is_none() {
                st.failed = Some(reason.clone());
            }
            st.pending.take_all()
        };
        self.fail_waiters(round.into_iter().chain(pending).collect(), &reason);
    }

    fn fail_waiters(&self, pending: Vec<Pending>, reason: &str) {
        for mut p in pending {
            if let Some(w) = p.waiter.take() {
                let _ = w.send(Err(EngineError::PartitionFailed {
                    partition: self.inner.name.clone(),
                    reason: reason.to_string(),
                }));
            }
        }
    }

    /// Closes the active segment and starts a new one at the next offset to write.
    /// A full disk leaves the log as it was or with the last segment closed (sealed, its
    /// indexes perhaps short: they are rebuilt from the log at the next start), and the next
    /// flush tries again.
    async fn roll(&self) -> std::result::Result<(), WriteFault> {
        let (appender, base) = {
            let mut st = self.inner.state.borrow_mut();
            let base = st.written_offset;
            let app = st
                .segments
                .values_mut()
                .next_back()
                .and_then(|s| s.active.as_mut())
                .and_then(|a| a.appender.take());
            (app, base)
        };
        if let Some(mut app) = appender {
            let path = app.file().path().to_path_buf();
            let closed = app.seal().await;
            if let Err(e) = closed {
                self.put_back_appender(Some(app));
                // A failed fdatasync is never retried, whatever its errno.
                return Err(WriteFault::Fatal(EngineError::from_io(e, &path)));
            }
        }
        // The closed segment stays in the map while its indexes are written: readers and
        // the log start must see it throughout (a fetch there must not look out of range).
        let closing = {
            let mut st = self.inner.state.borrow_mut();
            match st.segments.values_mut().next_back() {
                Some(seg) => seg.take_active(),
                None => return Err(WriteFault::Fatal(EngineError::Closed)),
            }
        };
        if let Some(mut closing) = closing {
            if let Err(e) = self.write_index_tails(&mut closing, false).await {
                if !e.is_disk_full() {
                    return Err(WriteFault::Fatal(e));
                }
                crate::warn_limited!("roll: disk full", partition = %self.inner.name, "a closed segment's indexes are short (rebuilt from the log at the next start): {e}");
            }
            let mut files = closing.into_files();
            let trimmed = match files.index_file.trim().await {
                Ok(()) => files.time_index_file.trim().await,
                Err(e) => Err(e),
            };
            if let Err(e) = trimmed {
                return Err(WriteFault::Fatal(EngineError::from_io(
                    e,
                    files.index_file.path(),
                )));
            }
        }
        let config = self.config();
        let new = Segment::create(&*self.inner.storage, &self.inner.dir, base, &config)
            .await
            .map_err(WriteFault::of_write)?;
        tracing::debug!(partition = %self.inner.name, base, "rolled to a new segment");
        self.inner.state.borrow_mut().segments.insert(base, new);
        // Without it the previous checkpoint, which names the closed segment, is ignored at the
        // next start, and recovery scans the new segment from its last index entry.
        if let Err(e) = self.write_checkpoint(false).await {
            crate::warn_limited!("checkpoint failed", partition = %self.inner.name, "recovery checkpoint not written at roll: {e}");
        }
        Ok(())
    }

    /// Writes the index entries a closing segment's files lack; on a full disk, with
    /// `reserve` (a clean close), once more after releasing the disk's reserve. A roll does
    /// without: its index entries can be rebuilt, and the reserve is kept for what frees space
    /// (deletions, retention changes) and for the stop.
    async fn write_index_tails(
        &self,
        closing: &mut crate::log::segment::ClosingFiles,
        reserve: bool,
    ) -> Result<()> {
        match closing.write().await {
            Err(e) if e.is_disk_full() && reserve => match self.space() {
                Some(space) => {
                    space.release_reserve(&format!("the indexes of {}", self.inner.name));
                    closing.write().await
                }
                None => Err(e),
            },
            r => r,
        }
    }

    /// Writes the recovery checkpoint; on a full disk with `reserve` (a clean close) once more
    /// after releasing the disk's reserve (see [`PartitionLog::write_index_tails`]).
    async fn write_checkpoint(&self, reserve: bool) -> Result<()> {
        let cp = {
            let st = self.inner.state.borrow();
            let Some(active) = st.segments.values().next_back() else {
                return Ok(());
            };
            RecoveryCheckpoint {
                active_base_offset: active.base_offset,
                position: active.size_bytes,
                next_offset: active.next_offset,
                index_entries: active.index.entries().len() as u64,
                time_index_entries: active.time_index.entries().len() as u64,
                log_start_offset: log_start(&st),
                max_timestamp_ms: active.max_timestamp_ms,
            }
        };
        let space = self.space().filter(|_| reserve);
        checkpoint::write(&*self.inner.storage, &self.inner.dir, &cp, space.as_deref())
            .await
            .map_err(|e| {
                if e.is_disk_full() {
                    EngineError::DiskFull {
                        path: checkpoint::path(&self.inner.dir),
                        detail: format!("the recovery checkpoint could not be written: {e}"),
                    }
                } else {
                    EngineError::Metadata(e.to_string())
                }
            })
    }

    /// Waits until no flush is running.
    async fn wait_idle(&self) {
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

    /// Reads batches from the one containing `offset`, up to about `max_bytes` (always at
    /// least one batch if any is readable). Empty at the log end.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<ReadBatch>> {
        let (start, end) = {
            let st = self.inner.state.borrow();
            (log_start(&st), st.written_offset)
        };
        if offset == end {
            return Ok(Vec::new());
        }
        if offset < start || offset > end {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        }
        // Taken whatever happens next: a resume point serves one read.
        let resume = self.inner.readahead.borrow_mut().take(offset);
        if let Some(hit) = self
            .inner
            .cache
            .borrow()
            .read(self.inner.cache_key, offset, max_bytes)
        {
            return Ok(hit);
        }
        if let Some(resume) = resume {
            let segment = {
                let st = self.inner.state.borrow();
                st.segments
                    .get(&resume.segment_base)
                    .map(|s| (s.file.clone(), s.size_bytes, s.next_offset))
            };
            if let Some((file, size, seg_next)) = segment {
                if offset < seg_next && resume.position < size {
                    let (base, position) = (resume.segment_base, resume.position);
                    let chunk = resume.chunk().await;
                    let frames =
                        read_frames(&*file, position, offset, size, offset, max_bytes, chunk)
                            .await?;
                    if !frames.batches.is_empty() {
                        return Ok(self.leave_resume(file, base, size, max_bytes, frames));
                    }
                }
            }
        }
        let mut target = offset;
        loop {
            let found = {
                let st = self.inner.state.borrow();
                st.segments.range(..=target).next_back().map(|(_, s)| {
                    let (rel, pos) = s.index.lookup(s.relative(target.max(s.base_offset)));
                    (
                        s.file.clone(),
                        s.base_offset,
                        s.base_offset + u64::from(rel),
                        pos,
                        s.size_bytes,
                        s.next_offset,
                    )
                })
            };
            let Some((file, base, scan_offset, pos, size, seg_next)) = found else {
                return Ok(Vec::new());
            };
            if target < seg_next {
                let frames =
                    read_frames(&*file, pos, scan_offset, size, target, max_bytes, None).await?;
                if !frames.batches.is_empty() {
                    return Ok(self.leave_resume(file, base, size, max_bytes, frames));
                }
            }
            // Nothing at or after `target` in that segment: continue in the next one.
            let next_base = {
                let st = self.inner.state.borrow();
                st.segments.range(target + 1..).next().map(|(b, _)| *b)
            };
            match next_base {
                Some(b) if b < end => target = b,
                _ => return Ok(Vec::new()),
            }
        }
    }

    /// After a disk read: remembers where this reader continues and, if the segment holds
    /// more, reads the next chunk ahead of it (see `readahead.rs`).
    fn leave_resume(
        &self,
        file: Rc<dyn crate::io::StorageFile>,
        segment_base: u64,
        size: u64,
        max_bytes: usize,
        frames: Frames,
    ) -> Vec<ReadBatch> {
        /// Longest read ahead, whatever a reader's `max_bytes`.
        const MAX_READ_AHEAD: usize = 16 << 20;
        let Some(next_offset) = frames.batches.last().map(ReadBatch::next_offset) else {
            return frames.batches;
        };
        let len = read_len(size.saturating_sub(frames.end), max_bytes).min(MAX_READ_AHEAD);
        let budget = self.inner.cache.borrow().readahead_budget();
        self.inner.readahead.borrow_mut().leave(
            &budget,
            file,
            next_offset,
            segment_base,
            frames.end,
            len,
        );
        frames.batches
    }

    /// The first offset whose batch has a max timestamp at or after `timestamp_ms`, with that
    /// batch's max timestamp; `None` if every batch is older.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(u64, i64)>> {
        let candidates: Vec<_> = {
            let st = self.inner.state.borrow();
            st.segments
                .values()
                .filter(|s| s.max_timestamp_ms >= timestamp_ms && s.size_bytes > 0)
                .map(|s| {
                    let rel = s.time_index.scan_start(timestamp_ms);
                    let (irel, pos) = s.index.lookup(rel);
                    (
                        s.file.clone(),
                        s.base_offset + u64::from(irel),
                        pos,
                        s.size_bytes,
                    )
                })
                .collect()
        };
        for (file, offset, pos, size) in candidates {
            let mut found = None;
            crate::log::scan::scan_frames(&*file, pos, offset, size, |h, _| {
                if found.is_none() && h.max_timestamp_ms >= timestamp_ms {
                    found = Some((h.base_offset, h.max_timestamp_ms));
                }
            })
            .await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The first batch holding the log's largest timestamp, and that timestamp (Kafka's
    /// ListOffsets MAX_TIMESTAMP, KIP-734). A segment's largest timestamp is kept in memory;
    /// only the segment holding the log start may owe it to batches below the start, so that
    /// one is scanned from the start. The segment with the largest is then scanned from where
    /// its time index says that timestamp is reached. `None` for an empty log.
    pub async fn offset_of_max_timestamp(&self) -> Result<Option<(u64, i64)>> {
        struct Candidate {
            file: Rc<dyn crate::io::StorageFile>,
            offset: u64,
            position: u64,
            size: u64,
            max_ts: i64,
            /// Its largest timestamp may be below the log start.
            holds_start: bool,
        }
        let (start, mut candidates) = {
            let st = self.inner.state.borrow();
            let start = log_start(&st);
            let candidates: Vec<Candidate> = st
                .segments
                .values()
                .filter(|s| s.size_bytes > 0 && s.next_offset > start)
                .map(|s| {
                    let holds_start = s.base_offset < start;
                    let rel = if holds_start {
                        s.relative(start)
                    } else {
                        s.time_index.scan_start(s.max_timestamp_ms)
                    };
                    let (irel, position) = s.index.lookup(rel);
                    Candidate {
                        file: s.file.clone(),
                        offset: s.base_offset + u64::from(irel),
                        position,
                        size: s.size_bytes,
                        max_ts: s.max_timestamp_ms,
                        holds_start,
                    }
                })
                .collect();
            (start, candidates)
        };
        let mut first_found = None;
        if let Some(c) = candidates.first_mut().filter(|c| c.holds_start) {
            crate::log::scan::scan_frames(&*c.file, c.position, c.offset, c.size, |h, _| {
                if h.next_offset() > start
                    && first_found.is_none_or(|(_, ts)| h.max_timestamp_ms > ts)
                {
                    first_found = Some((h.base_offset, h.max_timestamp_ms));
                }
            })
            .await?;
            c.max_ts = first_found.map_or(i64::MIN, |(_, ts)| ts);
        }
        // The first segment with the largest timestamp.
        let Some(best) = candidates
            .iter()
            .fold(None::<&Candidate>, |best, c| match best {
                Some(b) if b.max_ts >= c.max_ts => Some(b),
                _ => Some(c),
            })
            .filter(|c| c.max_ts > i64::MIN)
        else {
            return Ok(None);
        };
        if best.holds_start {
            return Ok(first_found);
        }
        let mut hit = None;
        crate::log::scan::scan_frames(
            &*best.file,
            best.position,
            best.offset,
            best.size,
            |h, _| {
                if hit.is_none() && h.max_timestamp_ms >= best.max_ts {
                    hit = Some((h.base_offset, h.max_timestamp_ms));
                }
            },
        )
        .await?;
        Ok(hit)
    }

    /// Deletes closed segments beyond the size and age limits. Returns how many it deleted.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let cfg = self.inner.config.borrow().clone();
        let mut deleted = 0;
        loop {
            let victim = {
                let st = self.inner.state.borrow();
                if st.segments.len() < 2 {
                    None
                } else {
                    let total: u64 = st.segments.values().map(|s| s.size_bytes).sum();
                    st.segments.values().next().and_then(|oldest| {
                        let by_size = cfg.retention_bytes >= 0
                            && total.saturating_sub(oldest.size_bytes)
                                >= cfg.retention_bytes as u64;
                        let by_age = cfg.retention_ms >= 0
                            && oldest.max_timestamp_ms >= 0
                            && oldest.max_timestamp_ms < now_ms.saturating_sub(cfg.retention_ms);
                        (by_size || by_age).then_some(oldest.base_offset)
                    })
                }
            };
            let Some(base) = victim else { break };
            self.delete_segment(base).await?;
            deleted += 1;
        }
        Ok(deleted)
    }

    async fn delete_segment(&self, base: u64) -> Result<()> {
        let seg = self.inner.state.borrow_mut().segments.remove(&base);
        let Some(seg) = seg else { return Ok(()) };
        let new_start = {
            let st = self.inner.state.borrow();
            log_start(&st)
        };
        self.inner
            .cache
            .borrow_mut()
            .evict_below(self.inner.cache_key, new_start);
        drop(seg);
        let dir = &self.inner.dir;
        for path in [
            segment::log_path(dir, base),
            segment::index_path(dir, base),
            segment::time_index_path(dir, base),
        ] {
            if let Err(e) = self.inner.storage.remove(&path).await {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(EngineError::from_io(e, &path));
                }
            }
        }
        tracing::info!(partition = %self.inner.name, base, "retention deleted segment");
        Ok(())
    }

    /// The first offset of the log's last `bytes` or a little more (an indexed batch at least
    /// that far before the end), or the log start: where a reader of the tail begins.
    pub fn offset_before_end(&self, bytes: u64) -> u64 {
        let st = self.inner.state.borrow();
        let start = log_start(&st);
        let mut left = bytes;
        for seg in st.segments.values().rev() {
            if seg.size_bytes >= left {
                let (relative, _) = seg.index.at_or_before_position(seg.size_bytes - left);
                return (seg.base_offset + u64::from(relative)).max(start);
            }
            left -= seg.size_bytes;
        }
        start
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

    /// Resolves once the log end is past `offset`, or the partition closes or fails. Returns
    /// at once if it already is. Callers bound the wait with their own timer.
    pub async fn wait_for_data(&self, offset: u64) {
        let rx = {
            let mut st = self.inner.state.borrow_mut();
            if st.written_offset > offset || st.closed || st.failed.is_some() {
                return;
            }
            // Waits given up (their caller's timer won) leave a cancelled sender: drop them
            // here, so an idle partition's list holds only the live waits.
            st.data_waiters.retain(|w| !w.is_canceled());
            let (tx, rx) = oneshot::channel();
            st.data_waiters.push(tx);
            rx
        };
        let _ = rx.await;
    }

    /// How many waits for data are registered (live or given up and not yet dropped).
    pub fn data_waiters(&self) -> usize {
        self.inner.state.borrow().data_waiters.len()
    }

    /// Makes `offset` the new log start (Kafka's DeleteRecords): offsets below it are no
    /// longer served and segments wholly below it are deleted. The new start is persisted
    /// before anything is deleted. `offset` may not pass the log end. Returns the log start.
    pub async fn delete_records(&self, offset: u64) -> Result<u64> {
        let (start, end) = {
            let st = self.inner.state.borrow();
            (log_start(&st), st.written_offset)
        };
        if offset > end {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset <= start {
            return Ok(start);
        }
        let path = self.inner.dir.join(START_FILE);
        let space = self.space();
        crate::atomic_file::write_reserved(
            &*self.inner.storage,
            &path,
            &offset.to_le_bytes(),
            space.as_deref(),
        )
        .await
        .map_err(|e| {
            if e.is_disk_full() {
                EngineError::DiskFull {
                    path: path.clone(),
                    detail: format!("the new log start could not be saved: {e}"),
                }
            } else {
                EngineError::Metadata(e.to_string())
            }
        })?;
        self.inner.state.borrow_mut().start_floor = offset;
        self.inner
            .cache
            .borrow_mut()
            .evict_below(self.inner.cache_key, offset);
        loop {
            let victim = {
                let st = self.inner.state.borrow();
                let mut it = st.segments.iter();
                match (it.next(), it.next()) {
                    (Some((base, _)), Some((next_base, _))) if *next_base <= offset => Some(*base),
                    _ => None,
                }
            };
            let Some(base) = victim else { break };
            self.delete_segment(base).await?;
        }
        Ok(self.stats().log_start_offset)
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

/// File holding the log start set by `delete_records` (8 bytes, little-endian).
pub const START_FILE: &str = "log-start";

/// A missing or damaged file means no floor: the log then starts at its first segment, which
/// serves records that were deleted but never loses any.
async fn read_start_floor(storage: &dyn Storage, dir: &Path) -> u64 {
    let path = dir.join(START_FILE);
    match crate::atomic_file::read(storage, &path).await {
        Ok(Some(b)) => <[u8; 8]>::try_from(b.as_slice()).map_or(0, u64::from_le_bytes),
        Ok(None) => 0,
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            0
        }
    }
}

fn log_start(st: &State) -> u64 {
    st.segments
        .values()
        .next()
        .map_or(st.written_offset, |s| s.base_offset)
        .max(st.start_floor.min(st.written_offset))
}

/// The payload as stored: with the base offset patch, three slices; without, the payload.
fn patched_chunks<'a>(payload: &'a [u8], patch: Option<&'a (usize, [u8; 8])>) -> Vec<&'a [u8]> {
    match patch {
        Some((at, bytes)) => vec![&payload[..*at], &bytes[..], &payload[at + 8..]],
        None => vec![payload],
    }
}

/// Bytes a read at a position `remaining` bytes before the segment end asks for.
fn read_len(remaining: u64, max_bytes: usize) -> usize {
    const MIN_READ_BYTES: usize = 64 * 1024;
    (remaining.min(usize::MAX as u64) as usize).min(
        max_bytes
            .saturating_add(FRAME_HEADER_LEN)
            .max(MIN_READ_BYTES),
    )
}

/// Frames read for a reader: the batches, and the file position just after the last one.
struct Frames {
    batches: Vec<ReadBatch>,
    end: u64,
}

/// Reads frames from `position` (a frame holding `scan_offset`) and returns those at or after
/// `target`, checking every frame's checksums. `first`, if given, holds the bytes at
/// `position` already read (read ahead); otherwise one read of the file, and payloads are
/// slices of it.
async fn read_frames(
    file: &dyn crate::io::StorageFile,
    position: u64,
    scan_offset: u64,
    size: u64,
    target: u64,
    max_bytes: usize,
    mut first: Option<Bytes>,
) -> Result<Frames> {
    let mut out = Frames {
        batches: Vec::new(),
        end: position,
    };
    let mut bytes_out = 0usize;
    let mut pos = position;
    let mut expected = scan_offset;
    let corrupt = |position: u64, reason: String| EngineError::Corrupt {
        path: file.path().to_path_buf(),
        position,
        reason,
    };
    // A damaged frame is an error only if nothing was read before it: the batches before it
    // are intact and are returned; the next read, starting at the damage, reports it.
    while pos < size && (out.batches.is_empty() || bytes_out < max_bytes) {
        // After the first batch, only what still fits in `max_bytes` is worth reading (a frame
        // that fits is within `read_len(.., room)`; a larger first frame is read whole below).
        let room = if out.batches.is_empty() {
            max_bytes
        } else {
            max_bytes - bytes_out
        };
        let mut chunk = match first.take() {
            Some(c) if !c.is_empty() => c,
            _ => file.read_at(pos, read_len(size - pos, room)).await?,
        };
        let header = match FrameHeader::decode(&chunk) {
            Ok(h) if h.base_offset == expected => h,
            Ok(h) => {
                return fail_or_partial(
                    out,
                    corrupt(
                        pos,
                        format!("expected offset {expected}, found {}", h.base_offset),
                    ),
                )
            }
            Err(e) => return fail_or_partial(out, corrupt(pos, e.to_string())),
        };
        if (chunk.len() as u64) < header.frame_len() {
            if over_budget(&header, &out, target, bytes_out, max_bytes) {
                return Ok(out);
            }
            if pos + header.frame_len() > size {
                return fail_or_partial(
                    out,
                    corrupt(pos, "frame extends past the segment end".into()),
                );
            }
            chunk = file.read_at(pos, header.frame_len() as usize).await?;
        }
        let mut at = 0usize;
        while at + FRAME_HEADER_LEN <= chunk.len() {
            let Ok(h) = FrameHeader::decode(&chunk[at..]) else {
                break;
            };
            if h.base_offset != expected {
                break;
            }
            // Checked before the frame is known to be whole: a frame that would not be
            // returned is not worth reading the rest of (the header has its own checksum).
            if over_budget(&h, &out, target, bytes_out, max_bytes) {
                return Ok(out);
            }
            let len = h.frame_len() as usize;
            if at + len > chunk.len() {
                break;
            }
            let wanted = h.next_offset() > target;
            let payload = chunk.slice(at + FRAME_HEADER_LEN..at + len);
            if let Err(e) = h.check_payload(&payload) {
                return fail_or_partial(out, corrupt(pos + at as u64, e.to_string()));
            }
            expected = h.next_offset();
            at += len;
            if wanted {
                bytes_out += payload.len();
                out.batches.push(ReadBatch::from_frame(&h, payload));
                out.end = pos + at as u64;
            }
            if pos + at as u64 >= size {
                break;
            }
        }
        if at == 0 {
            // The frame at `pos` did not decode on this pass: report it, or return what we have.
            return fail_or_partial(out, corrupt(pos, "frame does not decode".into()));
        }
        pos += at as u64;
    }
    Ok(out)
}

/// Whether the frame `h` is one the reader wants but that no longer fits: Kafka returns the
/// first batch whatever its size, and later ones only within `max_bytes`.
fn over_budget(
    h: &FrameHeader,
    out: &Frames,
    target: u64,
    bytes_out: usize,
    max_bytes: usize,
) -> bool {
    h.next_offset() > target
        && !out.batches.is_empty()
        && bytes_out + h.payload_len as usize > max_bytes
}

/// The batches read so far if there are any, else the error.
fn fail_or_partial(out: Frames, err: EngineError) -> Result<Frames> {
    if out.batches.is_empty() {
        Err(err)
    } else {
        Ok(out)
    }
}
