//! Cutting the tail of a partition log (a follower whose log diverged from its new leader's).
//!
//! `truncate_suffix(offset)` drops every batch that holds `offset` or a later one: the log
//! then ends at the start of the batch holding `offset` (Kafka truncates whole batches too).
//! The steps are ordered so that a crash at any point leaves the old log or a shorter prefix
//! of it that still reaches the cut, never a log with a hole, never a checkpoint that names
//! bytes that are gone:
//!
//! 1. the recovery checkpoint is removed (it may name positions past the cut);
//! 2. the segments wholly past the cut go, newest first, each removal synced in the directory;
//! 3. the segment holding the cut is cut back, fdatasynced, its indexes rewritten, and it
//!    becomes the active segment (reopened for writing if it was closed);
//! 4. the leader-epoch index loses its entries past the cut.
//!
//! Meanwhile appends are refused; the batch cache, read-ahead, durable offset and high
//! watermark are brought back to the cut.

use crate::error::{EngineError, Result};
use crate::io::{OpenMode, Storage};
use crate::log::partition::PartitionLog;
use crate::log::retention::log_start;
use crate::log::segment::{self, Segment};

impl PartitionLog {
    /// Drops the batch holding `offset` and everything after it; returns the new log end (at
    /// most `offset`). An offset at or past the log end changes nothing. A cut below the log
    /// start is out of range (a follower that far behind starts over from the leader's log
    /// start instead). Appends are refused while it runs; a failure fails the partition
    /// (its state on disk is then what a restart recovers).
    pub async fn truncate_suffix(&self, offset: u64) -> Result<u64> {
        self.exclusive_truncation(self.truncate_idle(offset)).await
    }

    /// Runs a truncation alone: one at a time, after every append in flight, appends
    /// refused meanwhile; a failure (other than a cut out of range, which changed nothing)
    /// fails the partition, its state on disk then being what a restart recovers.
    async fn exclusive_truncation<T>(
        &self,
        truncation: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.check_writable()?;
        if std::mem::replace(&mut self.inner.state.borrow_mut().truncating, true) {
            return Err(EngineError::InvalidAppend(
                "a truncation of this log is already running".into(),
            ));
        }
        self.wait_idle().await;
        let result = truncation.await;
        self.inner.state.borrow_mut().truncating = false;
        if let Err(e) = &result {
            if !matches!(e, EngineError::OffsetOutOfRange { .. }) {
                let msg = e.to_string();
                self.fail(
                    EngineError::PartitionFailed {
                        partition: self.inner.name.clone(),
                        reason: format!("truncation failed: {msg}"),
                    },
                    Vec::new(),
                );
            }
        }
        result
    }

    async fn truncate_idle(&self, offset: u64) -> Result<u64> {
        let (start, end) = {
            let st = self.inner.state.borrow();
            (log_start(&st), st.written_offset)
        };
        if offset >= end {
            return Ok(end);
        }
        let Some((base, cut_pos, cut)) = self.find_cut(offset).await? else {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        };
        if cut < start {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        }
        let storage = self.inner.storage.clone();
        let dir = self.inner.dir.clone();
        let io = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |e| EngineError::from_io(e, &path)
        };
        // Readers and the cache first: nothing past the cut is served from here on.
        self.inner.readahead.borrow_mut().clear();
        self.inner
            .cache
            .borrow_mut()
            .truncate_from(self.inner.cache_key, cut);
        {
            let mut st = self.inner.state.borrow_mut();
            st.next_offset = cut;
            st.written_offset = cut;
            st.durable_offset = st.durable_offset.min(cut);
            st.high_watermark = st.high_watermark.min(cut);
        }
        // 1. The checkpoint.
        remove_checkpoint(&*storage, &dir).await?;
        // 2. Later segments, newest first.
        loop {
            let last = {
                let mut st = self.inner.state.borrow_mut();
                match st.segments.keys().next_back().copied() {
                    Some(b) if b > base => st.segments.remove(&b).map(|s| (b, s)),
                    _ => None,
                }
            };
            let Some((b, seg)) = last else { break };
            drop(seg);
            remove_segment_files(&*storage, &dir, b).await?;
        }
        // 3. The segment holding the cut.
        let seg = self.inner.state.borrow_mut().segments.remove(&base);
        let Some(mut seg) = seg else {
            return Err(EngineError::Closed);
        };
        // Its appender and index files go (their bytes are rewritten below).
        seg.active = None;
        let log_path = segment::log_path(&dir, base);
        let file = storage
            .open(&log_path, OpenMode::ReadWrite)
            .await
            .map_err(io(&log_path))?;
        file.truncate(cut_pos).await.map_err(io(&log_path))?;
        file.fdatasync().await.map_err(io(&log_path))?;
        seg.file = file;
        seg.index.truncate_at_position(cut_pos);
        seg.time_index.truncate_at_offset((cut - base) as u32);
        // The largest timestamp below the cut: the time index's, and the frames after the last
        // index entry.
        let (rel, pos) = seg.index.at_or_before_position(cut_pos);
        let mut max_ts = seg
            .time_index
            .entries()
            .last()
            .map_or(i64::MIN, |e| e.timestamp_ms);
        crate::log::scan::scan_frames(&*seg.file, pos, base + u64::from(rel), cut_pos, |h, _| {
            max_ts = max_ts.max(h.max_timestamp_ms)
        })
        .await
        .map_err(io(&log_path))?;
        seg.max_timestamp_ms = max_ts;
        seg.size_bytes = cut_pos;
        seg.next_offset = cut;
        segment::persist_rebuilt(&*storage, &dir, base, &seg).await?;
        let config = self.config();
        let (index_len, time_len) = (seg.index.entries().len(), seg.time_index.entries().len());
        seg.open_active_files(
            &*storage,
            &dir,
            index_len,
            time_len,
            config.preallocate_step(),
        )
        .await?;
        self.inner.state.borrow_mut().segments.insert(base, seg);
        // 4. The epochs.
        let changed = self.inner.state.borrow_mut().epochs.truncate_from(cut);
        if changed {
            let index = self.inner.state.borrow().epochs.clone();
            let space = self.space();
            crate::log::epochs::write(&*storage, &dir, &index, space.as_deref())
                .await
                .map_err(|e| EngineError::Metadata(e.to_string()))?;
            self.inner.state.borrow_mut().epochs_on_disk = index;
        }
        tracing::info!(partition = %self.inner.name, offset, log_end = cut, "truncated the log's tail");
        Ok(cut)
    }

    /// The segment holding `offset`, and the position and offset of the batch holding it.
    async fn find_cut(&self, offset: u64) -> Result<Option<(u64, u64, u64)>> {
        let found = {
            let st = self.inner.state.borrow();
            st.segments
                .range(..=offset)
                .next_back()
                .map(|(_, s): (_, &Segment)| {
                    let target = s.relative(offset);
                    let (rel, pos) = s.index.lookup(target);
                    // The batch holding `offset` ends before the next indexed batch.
                    let scan_end = s
                        .index
                        .entries()
                        .iter()
                        .find(|e| e.relative_offset > target)
                        .map_or(s.size_bytes, |e| u64::from(e.position));
                    (
                        s.base_offset,
                        s.file.clone(),
                        s.base_offset + u64::from(rel),
                        pos,
                        scan_end,
                    )
                })
        };
        let Some((base, file, scan_offset, pos, size)) = found else {
            return Ok(None);
        };
        let mut cut = None;
        crate::log::scan::scan_frames(&*file, pos, scan_offset, size, |h, at| {
            if cut.is_none() && h.next_offset() > offset {
                cut = Some((at, h.base_offset));
            }
        })
        .await
        .map_err(|e| EngineError::from_io(e, file.path()))?;
        Ok(cut.map(|(at, o)| (base, at, o)))
    }
}

impl PartitionLog {
    /// Empties the log and starts it again at `offset` (Kafka's `truncateFullyAndStartAt`):
    /// a replica whose leader's log starts past this log's end, or a metadata log replaced by
    /// a snapshot. Every segment goes; the next append is at `offset`. Ordered so that a crash
    /// at any point leaves a prefix of the old log (segments go newest first) or the new empty
    /// log at `offset`, never a log with a hole:
    ///
    /// 1. the recovery checkpoint is removed;
    /// 2. every segment goes, newest first, each removal synced in the directory;
    /// 3. the leader-epoch index is saved empty;
    /// 4. an empty segment is created at `offset` (the directory synced), then the log
    ///    start (`offset`) is saved.
    ///
    /// Appends are refused while it runs; a failure fails the partition.
    pub async fn truncate_fully(&self, offset: u64) -> Result<()> {
        self.exclusive_truncation(self.truncate_fully_idle(offset))
            .await
    }

    async fn truncate_fully_idle(&self, offset: u64) -> Result<()> {
        let storage = self.inner.storage.clone();
        let dir = self.inner.dir.clone();
        self.inner.readahead.borrow_mut().clear();
        self.inner
            .cache
            .borrow_mut()
            .truncate_from(self.inner.cache_key, 0);
        // 1. The checkpoint.
        remove_checkpoint(&*storage, &dir).await?;
        // 2. Every segment, newest first.
        loop {
            let last = {
                let mut st = self.inner.state.borrow_mut();
                let b = st.segments.keys().next_back().copied();
                b.and_then(|b| st.segments.remove(&b).map(|s| (b, s)))
            };
            let Some((b, seg)) = last else { break };
            {
                let mut st = self.inner.state.borrow_mut();
                let end = st
                    .segments
                    .values()
                    .next_back()
                    .map_or(0, |s| s.next_offset);
                st.next_offset = end;
                st.written_offset = end;
                st.durable_offset = st.durable_offset.min(end);
                st.high_watermark = st.high_watermark.min(end);
            }
            drop(seg);
            remove_segment_files(&*storage, &dir, b).await?;
        }
        // 3. The leader epochs, emptied.
        let space = self.space();
        let index = crate::log::epochs::EpochIndex::default();
        crate::log::epochs::write(&*storage, &dir, &index, space.as_deref())
            .await
            .map_err(|e| EngineError::Metadata(e.to_string()))?;
        {
            let mut st = self.inner.state.borrow_mut();
            st.epochs = index.clone();
            st.epochs_on_disk = index;
        }
        // 4. The new, empty log, and its start. A tiered log's start stays where the tier's
        // is (a follower starts at its leader's local start, the rest is in the tier).
        let floor = if self.has_tier() {
            self.inner.state.borrow().start_floor.min(offset)
        } else {
            offset
        };
        let config = self.config();
        let seg = Segment::create(&*storage, &dir, offset, &config).await?;
        {
            let mut st = self.inner.state.borrow_mut();
            st.segments.insert(offset, seg);
            st.next_offset = offset;
            st.written_offset = offset;
            st.durable_offset = offset;
            st.high_watermark = offset;
            st.start_floor = floor;
        }
        crate::atomic_file::write_reserved(
            &*storage,
            &dir.join(crate::log::retention::START_FILE),
            &floor.to_le_bytes(),
            space.as_deref(),
        )
        .await
        .map_err(|e| EngineError::Metadata(e.to_string()))?;
        for w in self.inner.state.borrow_mut().hw_waiters.drain(..) {
            let _ = w.send(());
        }
        tracing::info!(partition = %self.inner.name, offset, "emptied the log; it starts again at this offset");
        Ok(())
    }
}

/// Removes the recovery checkpoint, if there is one, and syncs the directory: the first step
/// of a truncation, so that a crash after it recovers by scanning.
async fn remove_checkpoint(storage: &dyn Storage, dir: &std::path::Path) -> Result<()> {
    let cp = crate::log::checkpoint::path(dir);
    match storage.remove(&cp).await {
        Ok(()) => storage
            .sync_dir(dir)
            .await
            .map_err(|e| EngineError::from_io(e, dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::from_io(e, &cp)),
    }
}

/// Removes a segment's three files (those already gone are fine) and syncs the directory.
async fn remove_segment_files(
    storage: &dyn Storage,
    dir: &std::path::Path,
    base: u64,
) -> Result<()> {
    for path in [
        segment::log_path(dir, base),
        segment::index_path(dir, base),
        segment::time_index_path(dir, base),
    ] {
        match storage.remove(&path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(EngineError::from_io(e, &path))
            }
            _ => {}
        }
    }
    storage
        .sync_dir(dir)
        .await
        .map_err(|e| EngineError::from_io(e, dir))
}
