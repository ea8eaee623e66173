//! Queueing appends: a leader's batches at the log end, a follower's at the offsets the leader
//! gave them, each checked (sizes, contiguity, leader epochs, free space) and given its offsets
//! before anything is queued; `Appending` resolves per the durability asked for.

use futures_channel::oneshot;

use crate::error::{EngineError, Result};
use crate::frame::{FrameHeader, FrameMeta, FRAME_HEADER_LEN, FRAME_PAYLOAD_MAX_BYTES};
use crate::log::partition::{AppendBatch, AppendResult, PartitionLog};
use crate::log::pending::Pending;
use crate::log::write::patched_chunks;
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
        // Offsets only go up; a gap between batches is one compaction left in the leader's
        // log (each batch keeps its offsets, so the follower's copy has the same gaps).
        let mut expected = first;
        for b in &batches {
            if b.base_offset < expected {
                return Err(EngineError::InvalidAppend(format!(
                    "replicated batches overlap: offset {} follows {expected}",
                    b.base_offset
                )));
            }
            expected = b.next_offset();
        }
        let bases: Vec<u64> = batches.iter().map(|b| b.base_offset).collect();
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
        self.enqueue_at(batches, durability, Some((first, bases)))
            .await
    }

    /// Queues `batches` at the log end, or (a follower's) at the offsets given: the first at
    /// the log end or past it (a gap compaction left in the leader's log). Every check that
    /// can refuse the append is made before any batch is queued.
    async fn enqueue_at(
        &self,
        batches: Vec<AppendBatch>,
        durability: Durability,
        offsets: Option<(u64, Vec<u64>)>,
    ) -> Result<Appending> {
        let at = offsets.as_ref().map(|(first, _)| *first);
        let bases = offsets.map(|(_, bases)| bases);
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
            let base = at.unwrap_or(st.next_offset);
            let count = batches.len();
            let mut tx = Some(tx);
            for (i, (b, permit)) in batches.into_iter().zip(permits).enumerate() {
                let offset = bases
                    .as_ref()
                    .and_then(|b| b.get(i).copied())
                    .unwrap_or(st.next_offset);
                let flags = if offset == st.next_offset {
                    0
                } else {
                    crate::frame::FLAG_AFTER_GAP
                };
                let offset_patch = b
                    .base_offset_field
                    .map(|at| (at, (offset as i64).to_be_bytes()));
                let payload = b.payload;
                let header = FrameHeader::with_flags(
                    FrameMeta {
                        base_offset: offset,
                        record_count: b.record_count,
                        first_timestamp_ms: b.first_timestamp_ms,
                        max_timestamp_ms: b.max_timestamp_ms,
                        leader_epoch: b.leader_epoch,
                    },
                    flags,
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
            // Past the end is a gap the leader's compaction left; before it, an overlap.
            if at < st.next_offset {
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
}

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
