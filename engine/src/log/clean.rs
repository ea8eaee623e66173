//! One cleaning pass of a compacted partition (Kafka's log cleaner, on the partition's
//! shard): the dirty part of the log (closed segments from the first dirty offset) is read
//! into a key -> last offset map, then the closed segments below the map's end are rewritten,
//! a group at a time, keeping each key's last record, and swapped in (`swap.rs`).
//!
//! Kafka's rules: offsets never change (kept frames keep their base offset and offset span, a
//! frame left with no record goes, leaving a gap the readers step over); the active segment
//! is never cleaned, nor a segment not wholly below the high watermark or younger than
//! `min.compaction.lag.ms`; records without a key go; a tombstone goes once its timestamp is
//! `delete.retention.ms` old. The pass reads and writes through the log's `Storage` (O_DIRECT
//! in production, fault-injecting in tests) at the cleaner's I/O rate. Appends, reads and
//! retention go on meanwhile: a group whose segments changed under the pass (retention
//! deleted one) is dropped, and the next pass starts again.

use std::cell::RefCell;
use std::time::Instant;

use bytes::Bytes;

use crate::compaction::frame_keys::{FrameKeys, SLICE_RECORDS};
use crate::compaction::offset_map::OffsetMap;
use crate::compaction::throttle::Throttle;
use crate::compaction::{
    CleanReport, CleanerConfig, DirtyState, KeyedRecord, RecordKeys, Retained,
};
use crate::error::{EngineError, Result};
use crate::frame::{FrameHeader, FrameMeta, FLAG_AFTER_GAP, FRAME_HEADER_LEN};
use crate::io::StorageFile;
use crate::log::appender::Appender;
use crate::log::index::OffsetIndex;
use crate::log::partition::PartitionLog;
use crate::log::segment::{persist_indexes, Segment};
use crate::log::swap;
use crate::log::time_index::TimeIndex;

/// File holding the offset below which the log is clean and when its first kept tombstone
/// may go (8 bytes each, little-endian). Lost or damaged, the next pass cleans from the start
/// again: more work, never a wrong result.
pub const CLEANER_OFFSET_FILE: &str = "cleaner-offset";

/// Bytes read per read and written per append by a pass: small enough that the shard's own
/// I/O (produce's writes and fdatasyncs, fetches) does not queue long behind one.
const IO_CHUNK_BYTES: usize = 256 << 10;

/// The pass's time on its shard's core between two chances for other work: `pause` yields
/// if the executor wants the core (a request arrived, or the cleaner's latency class ran out),
/// and each stretch's length is kept for the report's `longest_step`. Counted in the shard
/// thread's CPU time, not wall time: what the pass itself held the core for, without the
/// time the kernel gave the core to another thread meanwhile.
struct Stretch {
    since: std::time::Duration,
    longest: std::time::Duration,
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; this clock exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Stretch {
    fn new() -> Self {
        Self {
            since: thread_cpu_time(),
            longest: std::time::Duration::ZERO,
        }
    }

    /// CPU work begins (after an await that waited for I/O or the throttle).
    fn start(&mut self) {
        self.since = thread_cpu_time();
        self.longest = std::time::Duration::ZERO;
    }

    async fn pause(&mut self) {
        self.longest = self
            .longest
            .max(thread_cpu_time().saturating_sub(self.since));
        glommio::yield_if_needed().await;
        self.since = thread_cpu_time();
    }

    /// The longest stretch since `start`.
    fn end(&self) -> std::time::Duration {
        self.longest
            .max(thread_cpu_time().saturating_sub(self.since))
    }
}

/// A compacted partition's cleaner state.
#[derive(Debug, Default)]
pub(crate) struct CleanerState {
    /// Offsets below this are clean (each key at most once, save tombstones kept).
    pub(crate) cleaned_to: u64,
    /// A pass runs.
    pub(crate) running: bool,
    pub(crate) last_cleaned_ms: i64,
    /// When the first tombstone a pass kept is old enough to go (`i64::MAX`: none kept): the
    /// partition is due a pass then, dirty or not.
    pub(crate) tombstones_due_ms: i64,
    /// A pass failed (an undecodable batch, an I/O error): not due again before this.
    pub(crate) retry_at_ms: i64,
    /// Keys in the last pass's map (0: no pass yet): the next map is sized for about as many.
    pub(crate) last_map_keys: u64,
}

/// How long a partition whose pass failed waits before the next one (others go meanwhile).
const RETRY_AFTER_FAILURE_MS: i64 = 10 * 60 * 1000;

/// A closed segment the pass may clean.
#[derive(Clone)]
struct Source {
    base: u64,
    /// The next segment's base: the offsets the segment stands for.
    end: u64,
    size: u64,
    max_timestamp_ms: i64,
    file: std::rc::Rc<dyn StorageFile>,
}

impl PartitionLog {
    /// How dirty the partition is, if it is compacted (its config has a compaction policy).
    pub fn dirty_state(&self, now_ms: i64) -> Option<DirtyState> {
        let policy = self.inner.config.borrow().compaction?;
        let cleaner = self.inner.cleaner.borrow();
        let mut d = DirtyState {
            oldest_dirty_ms: i64::MAX,
            last_cleaned_ms: cleaner.last_cleaned_ms,
            ..DirtyState::default()
        };
        for s in self.cleanable(now_ms, policy.min_compaction_lag_ms) {
            if s.end <= cleaner.cleaned_to {
                d.clean_bytes += s.size;
            } else {
                d.dirty_bytes += s.size;
                d.oldest_dirty_ms = d.oldest_dirty_ms.min(s.max_timestamp_ms);
            }
        }
        Some(d)
    }

    /// Whether the partition is due a pass: its dirty ratio is at least the policy's, or its
    /// oldest dirty record is older than `max.compaction.lag.ms`.
    pub fn needs_cleaning(&self, now_ms: i64) -> bool {
        let Some(policy) = self.inner.config.borrow().compaction else {
            return false;
        };
        let Some(d) = self.dirty_state(now_ms) else {
            return false;
        };
        let (tombstones_due, retry_at) = {
            let c = self.inner.cleaner.borrow();
            (c.tombstones_due_ms <= now_ms, c.retry_at_ms)
        };
        if now_ms < retry_at {
            return false;
        }
        (d.dirty_bytes > 0
            && (d.dirty_ppm() >= policy.min_cleanable_dirty_ppm
                || now_ms.saturating_sub(d.oldest_dirty_ms) >= policy.max_compaction_lag_ms))
            || (tombstones_due && d.clean_bytes > 0)
    }

    /// The closed segments a pass may clean, oldest first: wholly below the high watermark,
    /// and (from the oldest on) whose newest record is at least `lag_ms` old.
    fn cleanable(&self, now_ms: i64, lag_ms: i64) -> Vec<Source> {
        let st = self.inner.state.borrow();
        let bases: Vec<u64> = st.segments.keys().copied().collect();
        let mut out = Vec::new();
        for (i, (base, seg)) in st.segments.iter().enumerate() {
            let Some(&end) = bases.get(i + 1) else { break };
            if seg.active.is_some() || end > st.high_watermark {
                break;
            }
            if lag_ms > 0 && seg.max_timestamp_ms > now_ms.saturating_sub(lag_ms) {
                break;
            }
            out.push(Source {
                base: *base,
                end,
                size: seg.size_bytes,
                max_timestamp_ms: seg.max_timestamp_ms,
                file: seg.file.clone(),
            });
        }
        out
    }

    /// Runs one cleaning pass. `None` if there was nothing to clean (or the partition cannot
    /// be cleaned now: not compacted, tiered, failed, truncating, a pass already running).
    pub async fn clean(
        &self,
        keys: &dyn RecordKeys,
        cleaner: &CleanerConfig,
        now_ms: i64,
        throttle: &mut Throttle,
    ) -> Result<Option<CleanReport>> {
        let r = self.clean_once(keys, cleaner, now_ms, throttle).await;
        if r.is_err() {
            // The log is as it was; the shard's other partitions go first for a while.
            self.inner.cleaner.borrow_mut().retry_at_ms =
                now_ms.saturating_add(RETRY_AFTER_FAILURE_MS);
        }
        r
    }

    async fn clean_once(
        &self,
        keys: &dyn RecordKeys,
        cleaner: &CleanerConfig,
        now_ms: i64,
        throttle: &mut Throttle,
    ) -> Result<Option<CleanReport>> {
        let Some(policy) = self.inner.config.borrow().compaction else {
            return Ok(None);
        };
        {
            let st = self.inner.state.borrow();
            let mut c = self.inner.cleaner.borrow_mut();
            if c.running || st.truncating || st.closed || st.failed.is_some() || self.has_tier() {
                return Ok(None);
            }
            c.running = true;
        }
        let _running = Running(&self.inner.cleaner);
        let sources = self.cleanable(now_ms, policy.min_compaction_lag_ms);
        let first_dirty = self
            .inner
            .cleaner
            .borrow()
            .cleaned_to
            .max(sources.first().map_or(0, |s| s.base));
        let dirty = sources.iter().any(|s| s.end > first_dirty);
        let tombstones_due = self.inner.cleaner.borrow().tombstones_due_ms <= now_ms;
        if !dirty && !tombstones_due {
            return Ok(None);
        }
        let started = Instant::now();
        let mut report = CleanReport::default();
        let budget = usize::try_from(cleaner.dedupe_buffer_bytes).unwrap_or(usize::MAX);
        let (map, map_end) = self
            .build_map(
                keys,
                &sources,
                first_dirty,
                budget,
                throttle,
                &mut report.longest_step,
            )
            .await?;
        if dirty && map_end <= first_dirty {
            crate::warn_limited!(
                "cleaner map full",
                partition = %self.inner.name,
                "not cleaned: log.cleaner.dedupe_buffer_bytes = {} holds no key of the dirty log; raise it",
                cleaner.dedupe_buffer_bytes
            );
            return Ok(None);
        }
        let horizon = now_ms.saturating_sub(policy.delete_retention_ms);
        let segment_bytes = self.inner.config.borrow().segment_bytes;
        let mut to_clean: Vec<Source> = sources.into_iter().filter(|s| s.base < map_end).collect();
        let lens: Vec<usize> = groups(&to_clean, segment_bytes)
            .iter()
            .map(|g| g.len())
            .collect();
        for len in lens {
            // Each group's files go once it is swapped, not at the end of the pass: the old
            // segments' blocks are freed by a close off the reactor (`io::dma`) only if the
            // pass's descriptors are closed first.
            let group: Vec<Source> = to_clean.drain(..len).collect();
            let group = group.as_slice();
            let keep = |r: KeyedRecord<'_>, report: &mut CleanReport| -> bool {
                if r.offset >= map_end {
                    return true;
                }
                let Some(key) = r.key else { return false };
                if map.get(key).is_some_and(|last| last > r.offset) {
                    return false;
                }
                if r.tombstone {
                    if r.timestamp_ms < horizon {
                        report.tombstones_dropped += 1;
                        return false;
                    }
                    let due = r.timestamp_ms.saturating_add(policy.delete_retention_ms);
                    report.tombstones_due_ms =
                        Some(report.tombstones_due_ms.map_or(due, |d| d.min(due)));
                }
                true
            };
            if !self
                .clean_group(keys, group, keep, throttle, &mut report)
                .await?
            {
                // The log changed under the pass: what is swapped stays, the rest waits.
                return Ok(Some(report));
            }
        }
        report.clean_to = map_end;
        let due = report.tombstones_due_ms.unwrap_or(i64::MAX);
        self.save_cleaned_to(map_end, due).await;
        {
            let mut c = self.inner.cleaner.borrow_mut();
            c.cleaned_to = map_end;
            c.last_cleaned_ms = now_ms;
            c.last_map_keys = map.len() as u64;
            c.tombstones_due_ms = due;
        }
        tracing::info!(
            partition = %self.inner.name,
            segments_in = report.segments_in,
            segments_out = report.segments_out,
            bytes_in = report.bytes_in,
            bytes_out = report.bytes_out,
            records_read = report.records_read,
            records_kept = report.records_kept,
            clean_to = map_end,
            longest_step_us = report.longest_step.as_micros() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compacted"
        );
        Ok(Some(report))
    }

    /// Maps each key of the dirty records (from `first_dirty`) to its last offset, within
    /// `budget` bytes. Returns the map and the offset it stops at: records below it are
    /// mapped.
    async fn build_map(
        &self,
        keys: &dyn RecordKeys,
        sources: &[Source],
        first_dirty: u64,
        budget: usize,
        throttle: &mut Throttle,
        longest: &mut std::time::Duration,
    ) -> Result<(OffsetMap, u64)> {
        // Sized once for the keys expected (a table that grows rehashes every key at once,
        // milliseconds of the shard's core at 100,000 keys; one sized far past them costs
        // cache misses and page faults on every lookup): about the last pass's keys, at
        // first a quarter of the dirty range's offsets (a table log typically holds several
        // updates per key), never more than the offsets.
        let span = sources
            .last()
            .map_or(0, |s| s.end.saturating_sub(first_dirty));
        let last = self.inner.cleaner.borrow().last_map_keys;
        let expect = if last == 0 { span / 4 } else { last + last / 4 };
        let mut map = OffsetMap::new(budget, expect.min(span));
        let mut map_end = first_dirty;
        let mut records = FrameKeys::default();
        let mut stretch = Stretch::new();
        for s in sources.iter().filter(|s| s.end > first_dirty) {
            let mut frames = FrameReader::new(s.file.clone(), s.size, s.base);
            while let Some((h, payload)) = frames.next().await? {
                if h.next_offset() <= first_dirty {
                    continue;
                }
                stretch.start();
                records
                    .load(keys, h.base_offset, &payload)
                    .map_err(|e| self.undecodable(&s.file, h.base_offset, e))?;
                for i in 0..records.len() {
                    if i % SLICE_RECORDS == SLICE_RECORDS - 1 {
                        stretch.pause().await;
                    }
                    let Some(r) = records.get(i) else { break };
                    if r.offset < first_dirty {
                        continue;
                    }
                    if let Some(k) = r.key {
                        if !map.put(k, r.offset) {
                            *longest = (*longest).max(stretch.end());
                            return Ok((map, r.offset));
                        }
                    }
                }
                *longest = (*longest).max(stretch.end());
                throttle.pace(h.frame_len()).await;
                // The shard's other tasks first if this one has run its share.
                glommio::yield_if_needed().await;
            }
            map_end = s.end;
        }
        Ok((map, map_end))
    }

    /// Rewrites one group of consecutive segments into one, keeping the records `keep`
    /// accepts, and swaps it in. False if the group's segments changed meanwhile (nothing
    /// swapped).
    async fn clean_group(
        &self,
        keys: &dyn RecordKeys,
        group: &[Source],
        keep: impl Fn(KeyedRecord<'_>, &mut CleanReport) -> bool,
        throttle: &mut Throttle,
        report: &mut CleanReport,
    ) -> Result<bool> {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            return Ok(true);
        };
        let (base, end) = (first.base, last.end);
        let storage = self.inner.storage.clone();
        let dir = self.inner.dir.clone();
        let config = self.inner.config.borrow().clone();
        let path = swap::cleaned_path(&dir, base);
        let file = crate::log::segment::create_empty(&*storage, &path).await?;
        let mut out = Segment {
            base_offset: base,
            file: file.clone(),
            index: OffsetIndex::new(config.index_interval_bytes),
            time_index: TimeIndex::default(),
            size_bytes: 0,
            next_offset: base,
            max_timestamp_ms: i64::MIN,
            created_at: Instant::now(),
            active: None,
        };
        let mut appender = Appender::new(file.clone(), 0, Vec::new(), 0, 0);
        let mut pending: Vec<u8> = Vec::with_capacity(IO_CHUNK_BYTES + FRAME_HEADER_LEN);
        let mut records = FrameKeys::default();
        let mut verdicts: Vec<bool> = Vec::new();
        let mut stretch = Stretch::new();
        let mut expected = base;
        let io = |e: std::io::Error| EngineError::from_io(e, &path);
        for s in group {
            let mut frames = FrameReader::new(s.file.clone(), s.size, s.base);
            while let Some((h, payload)) = frames.next().await? {
                report.bytes_in += h.frame_len();
                // Paced as it is read: charged once the segment was read, the whole segment
                // went at the disk's full rate before the pause.
                throttle.pace(h.frame_len()).await;
                // Each record judged against the map in slices, then the batch rewritten as
                // judged (the hook walks it in the same order). A frame that spans no more
                // offsets than a slice is judged as the hook walks it: one walk, not two
                // (a compressed batch is decompressed by each walk).
                stretch.start();
                verdicts.clear();
                let retained = if h.next_offset() - h.base_offset <= SLICE_RECORDS as u64 {
                    keys.retain(h.base_offset, &payload, &mut |r| {
                        let k = keep(r, report);
                        verdicts.push(k);
                        k
                    })
                } else {
                    records
                        .load(keys, h.base_offset, &payload)
                        .map_err(|e| self.undecodable(&s.file, h.base_offset, e))?;
                    for i in 0..records.len() {
                        if i % SLICE_RECORDS == SLICE_RECORDS - 1 {
                            stretch.pause().await;
                        }
                        let Some(r) = records.get(i) else { break };
                        verdicts.push(keep(r, report));
                    }
                    let mut asked = 0usize;
                    let retained = keys.retain(h.base_offset, &payload, &mut |_| {
                        asked += 1;
                        // Past what the walk above saw (it cannot be): kept, never dropped.
                        verdicts.get(asked - 1).copied().unwrap_or(true)
                    });
                    if retained.is_ok() && asked != verdicts.len() {
                        return Err(self.undecodable(
                            &s.file,
                            h.base_offset,
                            format!("{asked} records rewritten of {} listed", verdicts.len()),
                        ));
                    }
                    retained
                }
                .map_err(|e| self.undecodable(&s.file, h.base_offset, e))?;
                report.records_read += verdicts.len() as u64;
                report.records_kept += verdicts.iter().filter(|k| **k).count() as u64;
                report.longest_step = report.longest_step.max(stretch.end());
                glommio::yield_if_needed().await;
                let (meta, body) = match retained {
                    Retained::Nothing => continue,
                    Retained::All | Retained::Marker => (meta_of(&h), payload),
                    Retained::Some {
                        payload,
                        first_timestamp_ms,
                        max_timestamp_ms,
                    } => (
                        FrameMeta {
                            first_timestamp_ms,
                            max_timestamp_ms,
                            ..meta_of(&h)
                        },
                        payload,
                    ),
                };
                let flags = if meta.base_offset == expected {
                    0
                } else {
                    FLAG_AFTER_GAP
                };
                let header = FrameHeader::with_flags(meta, flags, &[&body]);
                out.index_frame(&header, out.size_bytes);
                pending.extend_from_slice(&header.encode());
                pending.extend_from_slice(&body);
                out.size_bytes += header.frame_len();
                out.next_offset = header.next_offset();
                expected = header.next_offset();
                if pending.len() >= IO_CHUNK_BYTES {
                    appender.append(&[&pending]).await.map_err(io)?;
                    throttle.pace(pending.len() as u64).await;
                    report.bytes_out += pending.len() as u64;
                    pending.clear();
                }
            }
        }
        appender.append(&[&pending]).await.map_err(io)?;
        report.bytes_out += pending.len() as u64;
        appender.seal().await.map_err(io)?;
        // The group must be what it was when the pass read it (retention may have deleted a
        // segment of it meanwhile): else the cleaned copy goes.
        let unchanged = {
            let st = self.inner.state.borrow();
            !st.truncating
                && group.iter().all(|s| {
                    st.segments
                        .get(&s.base)
                        .is_some_and(|seg| seg.active.is_none() && seg.size_bytes == s.size)
                })
                && st.segments.range(base + 1..end).count() == group.len() - 1
        };
        if !unchanged {
            drop(file);
            let _ = storage.remove(&path).await;
            return Ok(false);
        }
        swap::commit(&*storage, &dir, base, end).await?;
        let index_entries = out.index.entries().to_vec();
        let time_entries = out.time_index.entries().to_vec();
        {
            let mut st = self.inner.state.borrow_mut();
            for s in group {
                st.segments.remove(&s.base);
            }
            out.max_timestamp_ms = out.max_timestamp_ms.max(
                group
                    .iter()
                    .map(|s| s.max_timestamp_ms)
                    .max()
                    .unwrap_or(i64::MIN),
            );
            st.segments.insert(base, out);
        }
        // Resume points and cached batches of the old files must not be served for the new.
        self.inner.readahead.borrow_mut().clear();
        self.inner
            .cache
            .borrow_mut()
            .evict_below(self.inner.cache_key, end);
        report.segments_in += group.len();
        report.segments_out += 1;
        let bases: Vec<u64> = group.iter().map(|s| s.base).collect();
        swap::complete(&*storage, &dir, base, end, &bases).await?;
        // Without them the next start scans this segment: slower, not wrong.
        if let Err(e) = persist_indexes(&*storage, &dir, base, &index_entries, &time_entries).await
        {
            tracing::warn!(partition = %self.inner.name, base, "cleaned segment's indexes not written: {e}");
        }
        Ok(true)
    }

    fn undecodable(
        &self,
        file: &std::rc::Rc<dyn StorageFile>,
        offset: u64,
        e: String,
    ) -> EngineError {
        EngineError::Corrupt {
            path: file.path().to_path_buf(),
            position: 0,
            reason: format!(
                "the cleaner cannot read the records of the batch at offset {offset}: {e}"
            ),
        }
    }

    async fn save_cleaned_to(&self, offset: u64, tombstones_due_ms: i64) {
        let path = self.inner.dir.join(CLEANER_OFFSET_FILE);
        let space = self.space();
        let mut bytes = offset.to_le_bytes().to_vec();
        bytes.extend_from_slice(&tombstones_due_ms.to_le_bytes());
        if let Err(e) = crate::atomic_file::write_reserved(
            &*self.inner.storage,
            &path,
            &bytes,
            space.as_deref(),
        )
        .await
        {
            tracing::warn!(partition = %self.inner.name, "cleaner offset not saved (the next start cleans from the log start again): {e}");
        }
    }
}

/// The cleaner's state as it last saved it: where the log is clean to, and when its first
/// kept tombstone may go. Nothing saved (or a damaged file): clean from the start, and a
/// pass once for the tombstones.
pub(crate) async fn read_cleaner_state(
    storage: &dyn crate::io::Storage,
    dir: &std::path::Path,
) -> CleanerState {
    let saved = match crate::atomic_file::read(storage, &dir.join(CLEANER_OFFSET_FILE)).await {
        Ok(Some(b)) if b.len() == 16 => {
            let (o, d) = b.split_at(8);
            <[u8; 8]>::try_from(o)
                .ok()
                .zip(<[u8; 8]>::try_from(d).ok())
                .map(|(o, d)| (u64::from_le_bytes(o), i64::from_le_bytes(d)))
        }
        _ => None,
    };
    let (cleaned_to, tombstones_due_ms) = saved.unwrap_or((0, 0));
    CleanerState {
        cleaned_to,
        tombstones_due_ms,
        ..CleanerState::default()
    }
}

/// Clears the running mark however the pass ends.
struct Running<'a>(&'a RefCell<CleanerState>);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.borrow_mut().running = false;
    }
}

fn meta_of(h: &FrameHeader) -> FrameMeta {
    FrameMeta {
        base_offset: h.base_offset,
        record_count: h.record_count,
        first_timestamp_ms: h.first_timestamp_ms,
        max_timestamp_ms: h.max_timestamp_ms,
        leader_epoch: h.leader_epoch,
    }
}

/// Consecutive segments cleaned into one: as many as fit in `segment_bytes` at their current
/// sizes (Kafka's grouping), offsets within a segment's u32 reach.
fn groups(sources: &[Source], segment_bytes: u64) -> Vec<&[Source]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < sources.len() {
        let mut end = start + 1;
        let mut size = sources[start].size;
        while end < sources.len()
            && size + sources[end].size <= segment_bytes
            && sources[end].end - sources[start].base <= u64::from(u32::MAX)
        {
            size += sources[end].size;
            end += 1;
        }
        out.push(&sources[start..end]);
        start = end;
    }
    out
}

/// The frames of a closed segment in order, each checked, read in large chunks.
struct FrameReader {
    file: std::rc::Rc<dyn StorageFile>,
    size: u64,
    pos: u64,
    expected: u64,
    chunk: Bytes,
    chunk_pos: u64,
}

impl FrameReader {
    fn new(file: std::rc::Rc<dyn StorageFile>, size: u64, base: u64) -> Self {
        Self {
            file,
            size,
            pos: 0,
            expected: base,
            chunk: Bytes::new(),
            chunk_pos: 0,
        }
    }

    async fn next(&mut self) -> Result<Option<(FrameHeader, Bytes)>> {
        if self.pos + FRAME_HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let path = self.file.path().to_path_buf();
        let corrupt = move |pos: u64, reason: String| EngineError::Corrupt {
            path: path.clone(),
            position: pos,
            reason,
        };
        let at = (self.pos - self.chunk_pos) as usize;
        let header_here = self.pos >= self.chunk_pos && at + FRAME_HEADER_LEN <= self.chunk.len();
        if !header_here {
            self.refill(IO_CHUNK_BYTES).await?;
        }
        let at = (self.pos - self.chunk_pos) as usize;
        let h =
            FrameHeader::decode(&self.chunk[at..]).map_err(|e| corrupt(self.pos, e.to_string()))?;
        if !h.follows(self.expected) {
            return Err(corrupt(
                self.pos,
                format!("expected offset {}, found {}", self.expected, h.base_offset),
            ));
        }
        let len = h.frame_len() as usize;
        if at + len > self.chunk.len() {
            self.refill(len.max(IO_CHUNK_BYTES)).await?;
        }
        let at = (self.pos - self.chunk_pos) as usize;
        if at + len > self.chunk.len() {
            return Err(corrupt(
                self.pos,
                "frame extends past the segment end".into(),
            ));
        }
        let payload = self.chunk.slice(at + FRAME_HEADER_LEN..at + len);
        h.check_payload(&payload)
            .map_err(|e| corrupt(self.pos, e.to_string()))?;
        self.pos += len as u64;
        self.expected = h.next_offset();
        Ok(Some((h, payload)))
    }

    async fn refill(&mut self, want: usize) -> Result<()> {
        let len = (want as u64).min(self.size - self.pos) as usize;
        self.chunk = self.file.read_at(self.pos, len).await?;
        self.chunk_pos = self.pos;
        Ok(())
    }
}
