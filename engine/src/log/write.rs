//! The append path of a partition log: queueing batches with their offsets, and the flush
//! loop that writes them in rounds, pipelines fdatasyncs (group commit) and resolves each
//! append at the durability it asked for; after a fatal error, the partition's failure.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;

use crate::error::{EngineError, Result};
use crate::frame::{FrameHeader, FrameMeta, FRAME_HEADER_LEN, FRAME_PAYLOAD_MAX_BYTES};
use crate::log::partition::{AppendBatch, AppendResult, PartitionLog, State};
use crate::log::pending::Pending;
use crate::{Durability, ReadBatch};

impl PartitionLog {
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
        self.enqueue_at(batches, durability, None).await
    }

    /// A follower's append: `batches` as the leader's log holds them (read from it with
    /// their offsets, epochs and timestamps), stored verbatim at those offsets. They must be
    /// contiguous and start at this log's end ([`EngineError::NotContiguous`] otherwise),
    /// and their epochs may not go below the log's latest ([`EngineError::StaleEpoch`]).
    pub async fn append_replicated(
        &self,
        batches: Vec<ReadBatch>,
        durability: Durability,
    ) -> Result<AppendResult> {
        self.enqueue_replicated(batches, durability)
            .await?
            .wait()
            .await
    }

    /// The first half of [`PartitionLog::append_replicated`] (see [`PartitionLog::enqueue`]).
    pub async fn enqueue_replicated(
        &self,
        batches: Vec<ReadBatch>,
        durability: Durability,
    ) -> Result<Appending> {
        let Some(first) = batches.first().map(|b| b.base_offset) else {
            return Err(EngineError::InvalidAppend("no batches".into()));
        };
        let mut expected = first;
        for b in &batches {
            if b.base_offset != expected {
                return Err(EngineError::InvalidAppend(format!(
                    "replicated batches are not contiguous: offset {} follows {expected}",
                    b.base_offset
                )));
            }
            expected = b.next_offset();
        }
        let batches = batches
            .into_iter()
            .map(|b| AppendBatch {
                payload: b.payload,
                record_count: b.record_count,
                first_timestamp_ms: b.first_timestamp_ms,
                max_timestamp_ms: b.max_timestamp_ms,
                leader_epoch: b.leader_epoch,
                base_offset_field: None,
            })
            .collect();
        self.enqueue_at(batches, durability, Some(first)).await
    }

    /// Queues `batches` at the log end, which must be `at` if given. Every check that can
    /// refuse the append is made before any batch is queued.
    async fn enqueue_at(
        &self,
        batches: Vec<AppendBatch>,
        durability: Durability,
        at: Option<u64>,
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
        self.check_placement(&batches, at)?;
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
        // Again: other appends may have been queued while this one waited for room.
        self.check_placement(&batches, at)?;
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
                st.epochs.assign(b.leader_epoch, offset);
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

    /// Whether `batches` may go at the log end now: at offset `at` if given, and with
    /// leader epochs that never go down (along the batches, and from the log's latest).
    fn check_placement(&self, batches: &[AppendBatch], at: Option<u64>) -> Result<()> {
        let st = self.inner.state.borrow();
        if let Some(at) = at {
            if at != st.next_offset {
                return Err(EngineError::NotContiguous {
                    got: at,
                    log_end: st.next_offset,
                });
            }
        }
        let mut latest = st.epochs.latest().map(|e| e.epoch);
        for b in batches {
            if let Some(l) = latest.filter(|l| b.leader_epoch < *l) {
                return Err(EngineError::StaleEpoch {
                    epoch: b.leader_epoch,
                    latest: l,
                });
            }
            latest = Some(b.leader_epoch);
        }
        Ok(())
    }

    /// Saves the leader-epoch index if the queued appends changed it.
    async fn persist_epochs(&self) -> std::result::Result<(), WriteFault> {
        let index = {
            let st = self.inner.state.borrow();
            if st.epochs == st.epochs_on_disk {
                return Ok(());
            }
            st.epochs.clone()
        };
        let space = self.space();
        crate::log::epochs::write(
            &*self.inner.storage,
            &self.inner.dir,
            &index,
            space.as_deref(),
        )
        .await
        .map_err(|e| {
            let path = crate::log::epochs::path(&self.inner.dir);
            if e.is_disk_full() {
                WriteFault::NoSpace(EngineError::DiskFull {
                    path,
                    detail: format!("the leader-epoch index could not be saved: {e}"),
                })
            } else {
                WriteFault::Fatal(EngineError::Metadata(format!("{}: {e}", path.display())))
            }
        })?;
        self.inner.state.borrow_mut().epochs_on_disk = index;
        Ok(())
    }

    pub(super) fn check_writable(&self) -> Result<()> {
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
        if st.truncating {
            return Err(EngineError::InvalidAppend(
                "the log's tail is being truncated; append again once it is done".into(),
            ));
        }
        Ok(())
    }

    pub(super) fn failed_error(&self) -> EngineError {
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

    pub(super) fn start_flush(&self) {
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
    pub(super) async fn flush_loop(self, mut force_sync: bool) {
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
            // A round that starts a leader epoch is written only once the epoch index names it.
            match self.persist_epochs().await {
                Ok(()) => {}
                Err(WriteFault::NoSpace(e)) => {
                    crate::warn_limited!("epochs: disk full", partition = %self.inner.name, "appends refused: the leader-epoch index cannot be saved: {e}");
                    self.refuse_unwritten(&e, round);
                    continue;
                }
                Err(WriteFault::Fatal(e)) => {
                    self.fail(e, round);
                    continue;
                }
            }
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
    pub(super) async fn sync_now(&self) {
        {
            let mut st = self.inner.state.borrow_mut();
            if st.flushing
                || st.truncating
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

    pub(super) fn roll_needed(&self, st: &State) -> bool {
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
        let config = self.inner.config.borrow();
        let index_full =
            active.index.entries().len() as u64 >= (config.segment_index_bytes / 8).max(1);
        active.size_bytes + next > config.segment_bytes
            || index_full
            || active.created_at.elapsed() >= Duration::from_millis(config.segment_ms)
    }

    /// Takes the frames of the next write: as many pending frames as fit in one write and in
    /// the active segment (at least one).
    pub(super) fn take_round(&self) -> Vec<Pending> {
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
    pub(super) async fn write_round(
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
            // A round is the next frames of the log, in order, none of them written before.
            debug_assert!(
                round
                    .iter()
                    .try_fold(st.written_offset, |at, p| (p.header.base_offset == at)
                        .then(|| p.header.next_offset()))
                    .is_some(),
                "a write round is not contiguous with the log end"
            );
            if let Some(last) = round.last() {
                st.written_offset = last.header.next_offset();
            }
            let written = st.written_offset;
            debug_assert!(st.durable_offset <= written && written <= st.next_offset);
            if let Some(active) = st.segments.values_mut().next_back() {
                active.size_bytes = end;
                active.next_offset = written;
            }
            for w in st.data_waiters.drain(..) {
                let _ = w.send(());
            }
            if !st.hw_managed {
                st.set_high_watermark(written);
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
    pub(super) fn start_sync(
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
    pub(super) fn complete_sync(
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

    pub(super) fn put_back_appender(&self, appender: Option<crate::log::appender::Appender>) {
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
    pub(super) fn unindex_round(
        &self,
        (position, first_relative, max_timestamp_ms): (u64, u32, i64),
    ) {
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
    pub(super) fn refuse_unwritten(&self, err: &EngineError, round: Vec<Pending>) {
        let pending = {
            let mut st = self.inner.state.borrow_mut();
            st.next_offset = st.written_offset;
            let end = st.written_offset;
            st.epochs.truncate_from(end);
            st.pending.take_all()
        };
        for mut p in round.into_iter().chain(pending) {
            if let Some(w) = p.waiter.take() {
                let _ = w.send(Err(disk_full_copy(err)));
            }
        }
    }

    /// Marks the partition failed and fails `round` and everything pending.
    pub(super) fn fail(&self, err: EngineError, round: Vec<Pending>) {
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

    pub(super) fn fail_waiters(&self, pending: Vec<Pending>, reason: &str) {
        for mut p in pending {
            if let Some(w) = p.waiter.take() {
                let _ = w.send(Err(EngineError::PartitionFailed {
                    partition: self.inner.name.clone(),
                    reason: reason.to_string(),
                }));
            }
        }
    }
}

/// While an fdatasync is in flight, frames that all wait for durability are written only
/// once this many bytes are pending; fewer wait for the fdatasync to finish and go out with
/// what arrives meanwhile. Appenders that wait for their ack before appending again (64
/// tasks of 16 KiB each) then share one write and one fdatasync instead of splitting into two
/// halves that alternate: 950 against 830 MiB/s on the development VM.
pub(super) const PIPELINE_WRITE_BYTES: u64 = 1024 * 1024;

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
pub(super) struct InflightSync {
    task: glommio::Task<bool>,
}

/// Why a write step failed: a full disk leaves the log's state known and writable later;
/// anything else fails the partition.
pub(super) enum WriteFault {
    NoSpace(EngineError),
    Fatal(EngineError),
}

impl WriteFault {
    /// Sorts a write or allocation error (never a sync error: those are always fatal).
    pub(super) fn of_write(e: EngineError) -> Self {
        if e.is_disk_full() {
            WriteFault::NoSpace(e)
        } else {
            WriteFault::Fatal(e)
        }
    }
}

/// A copy of a disk-full error for each refused append.
pub(super) fn disk_full_copy(e: &EngineError) -> EngineError {
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

/// The payload as stored: with the base offset patch, three slices; without, the payload.
pub(super) fn patched_chunks<'a>(
    payload: &'a [u8],
    patch: Option<&'a (usize, [u8; 8])>,
) -> Vec<&'a [u8]> {
    match patch {
        Some((at, bytes)) => vec![&payload[..*at], &bytes[..], &payload[at + 8..]],
        None => vec![payload],
    }
}
