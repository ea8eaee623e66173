//! The time index of one segment: greatest timestamp so far -> relative offset of the frame
//! where it was first reached. Used to find the first frame whose max timestamp reaches a
//! target (ListOffsets by time) without reading the whole segment.

use super::index_file::Entry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

impl Entry for TimeEntry {
    const LEN: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&self.relative_offset.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Self {
        let mut a = [0u8; 8];
        let mut b = [0u8; 4];
        a.copy_from_slice(&bytes[..8]);
        b.copy_from_slice(&bytes[8..12]);
        TimeEntry {
            timestamp_ms: i64::from_le_bytes(a),
            relative_offset: u32::from_le_bytes(b),
        }
    }
}

/// Whether `next` may follow `prev` in a time index (both fields strictly increase; the
/// all-zero padding entry never follows anything).
pub fn time_entry_follows(prev: Option<&TimeEntry>, next: &TimeEntry) -> bool {
    if next.timestamp_ms == 0 && next.relative_offset == 0 && prev.is_some() {
        return false;
    }
    match prev {
        None => !(next.timestamp_ms == 0 && next.relative_offset == 0),
        Some(p) => next.timestamp_ms > p.timestamp_ms && next.relative_offset > p.relative_offset,
    }
}

#[derive(Debug, Clone, Default)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    pub fn from_entries(entries: Vec<TimeEntry>) -> Self {
        Self { entries }
    }

    pub fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }

    /// Records that the segment's max timestamp reached `timestamp_ms` at `relative_offset`.
    pub fn maybe_add(&mut self, timestamp_ms: i64, relative_offset: u32) {
        let follows = match self.entries.last() {
            None => true,
            Some(last) => {
                timestamp_ms > last.timestamp_ms && relative_offset > last.relative_offset
            }
        };
        if follows {
            self.entries.push(TimeEntry {
                timestamp_ms,
                relative_offset,
            });
        }
    }

    /// Relative offset from which to scan for the first frame with max timestamp >= `ts`:
    /// the offset of the last entry below `ts` (its frame is before the answer), or 0.
    pub fn scan_start(&self, ts: i64) -> u32 {
        let idx = self.entries.partition_point(|e| e.timestamp_ms < ts);
        if idx == 0 {
            0
        } else {
            self.entries[idx - 1].relative_offset
        }
    }

    pub fn truncate_at_offset(&mut self, relative_offset: u32) {
        let keep = self
            .entries
            .partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
    }
}
