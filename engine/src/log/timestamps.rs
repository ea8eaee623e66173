//! Lookups by time in a partition log: the first batch at or after a timestamp, and the
//! first batch holding the largest timestamp (Kafka's ListOffsets by time and MAX_TIMESTAMP).

use std::rc::Rc;

use crate::error::Result;
use crate::log::partition::PartitionLog;
use crate::log::retention::log_start;

impl PartitionLog {
    /// The first offset whose batch has a max timestamp at or after `timestamp_ms`, with that
    /// batch's max timestamp; `None` if every batch is older.
    pub async fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<(u64, i64)>> {
        if let Some(found) = self.remote_offset_for_timestamp(timestamp_ms).await? {
            return Ok(Some(found));
        }
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
}
