//! Reads of a partition log: from the batch cache, from a read-ahead resume point, or from
//! the segment files (every frame's checksums checked), and the wait of a long poll for new
//! data.

use std::rc::Rc;

use bytes::Bytes;
use futures_channel::oneshot;

use crate::error::{EngineError, Result};
use crate::frame::{FrameHeader, FRAME_HEADER_LEN};
use crate::log::partition::PartitionLog;
use crate::log::retention::log_start;
use crate::ReadBatch;

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Up to the high watermark: what a consumer may see.
    HighWatermark,
    /// Up to the log end: what a follower copies.
    LogEnd,
}

impl PartitionLog {
    /// A consumer's read: [`PartitionLog::read_to`] up to the high watermark.
    pub async fn read(&self, offset: u64, max_bytes: usize) -> Result<Vec<ReadBatch>> {
        self.read_to(offset, max_bytes, ReadBound::HighWatermark)
            .await
    }

    /// Reads batches from the one containing `offset`, up to about `max_bytes` (always at
    /// least one batch if any is readable), and only whole batches below `bound`. Empty at
    /// the bound; an offset below the log start or past the log end is out of range.
    pub async fn read_to(
        &self,
        offset: u64,
        max_bytes: usize,
        bound: ReadBound,
    ) -> Result<Vec<ReadBatch>> {
        let (start, end, limit) = {
            let st = self.inner.state.borrow();
            let limit = match bound {
                ReadBound::HighWatermark => st.high_watermark,
                ReadBound::LogEnd => st.written_offset,
            };
            (log_start(&st), st.written_offset, limit)
        };
        if offset < start || offset > end {
            return Err(EngineError::OffsetOutOfRange {
                offset,
                log_start: start,
                log_end: end,
            });
        }
        if offset >= limit {
            return Ok(Vec::new());
        }
        let mut batches = self.read_below_end(offset, max_bytes, end).await?;
        if limit < end {
            let keep = batches.partition_point(|b| b.next_offset() <= limit);
            batches.truncate(keep);
        }
        Ok(batches)
    }

    /// [`PartitionLog::read_to`] without a bound below the log end (`end`, as it was when the
    /// read was checked).
    async fn read_below_end(
        &self,
        offset: u64,
        max_bytes: usize,
        end: u64,
    ) -> Result<Vec<ReadBatch>> {
        // Below the local start of a tiered log: from the cold tier.
        let offset = match self.read_remote(offset, max_bytes).await? {
            crate::log::tiered::RemoteRead::Served(batches) => return Ok(batches),
            crate::log::tiered::RemoteRead::Local(offset) => offset,
        };
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
    pub(super) fn leave_resume(
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

    /// Resolves once the high watermark is past `offset` (a consumer's long poll), or the
    /// partition closes or fails. Returns at once if it already is. Callers bound the wait
    /// with their own timer.
    pub async fn wait_for_data(&self, offset: u64) {
        self.wait_for(offset, ReadBound::HighWatermark).await
    }

    /// Resolves once `bound` is past `offset`, or the partition closes or fails.
    pub async fn wait_for(&self, offset: u64, bound: ReadBound) {
        let rx = {
            let mut st = self.inner.state.borrow_mut();
            let at = match bound {
                ReadBound::HighWatermark => st.high_watermark,
                ReadBound::LogEnd => st.written_offset,
            };
            if at > offset || st.closed || st.failed.is_some() {
                return;
            }
            // Waits given up (their caller's timer won) leave a cancelled sender: drop them
            // here, so an idle partition's lists hold only the live waits.
            let waiters = match bound {
                ReadBound::HighWatermark => &mut st.hw_waiters,
                ReadBound::LogEnd => &mut st.data_waiters,
            };
            waiters.retain(|w| !w.is_canceled());
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            rx
        };
        let _ = rx.await;
    }

    /// How many waits for data are registered (live or given up and not yet dropped).
    pub fn data_waiters(&self) -> usize {
        let st = self.inner.state.borrow();
        st.data_waiters.len() + st.hw_waiters.len()
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
}

/// Bytes a read at a position `remaining` bytes before the segment end asks for.
pub(super) fn read_len(remaining: u64, max_bytes: usize) -> usize {
    const MIN_READ_BYTES: usize = 64 * 1024;
    (remaining.min(usize::MAX as u64) as usize).min(
        max_bytes
            .saturating_add(FRAME_HEADER_LEN)
            .max(MIN_READ_BYTES),
    )
}

/// Frames read for a reader: the batches, and the file position just after the last one.
pub(super) struct Frames {
    pub(super) batches: Vec<ReadBatch>,
    pub(super) end: u64,
}

/// Reads frames from `position` (a frame holding `scan_offset`) and returns those at or after
/// `target`, checking every frame's checksums. `first`, if given, holds the bytes at
/// `position` already read (read ahead); otherwise one read of the file, and payloads are
/// slices of it.
pub(super) async fn read_frames(
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
            Ok(h) if h.follows(expected) => h,
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
            if !h.follows(expected) {
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
pub(super) fn over_budget(
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
pub(super) fn fail_or_partial(out: Frames, err: EngineError) -> Result<Frames> {
    if out.batches.is_empty() {
        Err(err)
    } else {
        Ok(out)
    }
}
