//! The sparse offset index of one segment: frame base offset -> file position.
//!
//! One entry per `index_interval_bytes` of log. Entries are relative to the segment's base
//! offset (u32 each), strictly increasing in both fields; position 0 is implicit and never
//! stored. A lookup returns the last entry at or below the target, from where a reader scans
//! frames forward.

use super::index_file::Entry;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const LEN: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.relative_offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }
    fn decode(bytes: &[u8]) -> Self {
        let mut a = [0u8; 4];
        let mut b = [0u8; 4];
        a.copy_from_slice(&bytes[..4]);
        b.copy_from_slice(&bytes[4..8]);
        OffsetEntry {
            relative_offset: u32::from_le_bytes(a),
            position: u32::from_le_bytes(b),
        }
    }
}

/// Whether `next` may follow `prev` in an offset index.
pub fn offset_entry_follows(prev: Option<&OffsetEntry>, next: &OffsetEntry) -> bool {
    match prev {
        None => next.position > 0 && next.relative_offset > 0,
        Some(p) => next.position > p.position && next.relative_offset > p.relative_offset,
    }
}

/// In-memory sparse index of a segment.
#[derive(Debug, Clone, Default)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
    /// Log position of the last indexed frame (0 for the implicit first entry).
    last_indexed_position: u64,
    interval_bytes: u64,
}

impl OffsetIndex {
    pub fn new(interval_bytes: u64) -> Self {
        Self {
            entries: Vec::new(),
            last_indexed_position: 0,
            interval_bytes,
        }
    }

    pub fn from_entries(entries: Vec<OffsetEntry>, interval_bytes: u64) -> Self {
        let last = entries.last().map_or(0, |e| u64::from(e.position));
        Self {
            entries,
            last_indexed_position: last,
            interval_bytes,
        }
    }

    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    /// Records a frame at `position` if the interval since the last entry has passed.
    /// Returns whether an entry was added.
    pub fn maybe_add(&mut self, relative_offset: u32, position: u64) -> bool {
        if position == 0 || position < self.last_indexed_position + self.interval_bytes {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if relative_offset <= last.relative_offset {
                return false;
            }
        }
        self.entries.push(OffsetEntry {
            relative_offset,
            position: position as u32,
        });
        self.last_indexed_position = position;
        true
    }

    /// The indexed frame to start scanning from for `relative_offset`: (relative offset of
    /// that frame's base, its position). `(0, 0)` when no entry is at or below the target.
    pub fn lookup(&self, relative_offset: u32) -> (u32, u64) {
        let idx = self
            .entries
            .partition_point(|e| e.relative_offset <= relative_offset);
        if idx == 0 {
            (0, 0)
        } else {
            let e = self.entries[idx - 1];
            (e.relative_offset, u64::from(e.position))
        }
    }

    /// The last indexed frame at or before byte `position`: (relative offset, position).
    /// `(0, 0)` when none is.
    pub fn at_or_before_position(&self, position: u64) -> (u32, u64) {
        let idx = self
            .entries
            .partition_point(|e| u64::from(e.position) <= position);
        if idx == 0 {
            (0, 0)
        } else {
            let e = self.entries[idx - 1];
            (e.relative_offset, u64::from(e.position))
        }
    }

    /// Drops entries at or after `position` (the log was cut there).
    pub fn truncate_at_position(&mut self, position: u64) {
        let keep = self
            .entries
            .partition_point(|e| u64::from(e.position) < position);
        self.entries.truncate(keep);
        self.last_indexed_position = self.entries.last().map_or(0, |e| u64::from(e.position));
    }

    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::index_file::decode_entries;
    use proptest::prelude::*;

    proptest! {
        /// Against a model: a list of every frame (offset, position); the lookup must return
        /// the greatest indexed frame at or below the target, and never one above it.
        #[test]
        fn lookup_matches_model(
            sizes in proptest::collection::vec((1u32..50, 1u64..10_000), 1..300),
            interval in 1u64..20_000,
            probes in proptest::collection::vec(any::<u32>(), 1..50),
        ) {
            let mut index = OffsetIndex::new(interval);
            let mut frames = Vec::new(); // (relative offset, position)
            let (mut off, mut pos) = (0u32, 0u64);
            for (count, size) in &sizes {
                frames.push((off, pos));
                index.maybe_add(off, pos);
                off += count;
                pos += size;
            }
            for probe in probes {
                let target = probe % (off + 10);
                let (found_off, found_pos) = index.lookup(target);
                prop_assert!(found_off <= target);
                // The answer is a real frame start.
                prop_assert!(frames.contains(&(found_off, found_pos)));
                // No indexed entry lies strictly between the answer and the target.
                for e in index.entries() {
                    prop_assert!(!(e.relative_offset > found_off && e.relative_offset <= target));
                }
                // Scanning from the answer reaches the frame containing the target no later
                // than an interval's worth of bytes past the last entry.
                let containing = frames.iter().rev().find(|(o, _)| *o <= target).unwrap();
                prop_assert!(containing.1 >= found_pos);
            }
        }

        #[test]
        fn encode_decode_round_trip(raw in proptest::collection::vec((1u32..1000, 1u32..1000), 0..100)) {
            let mut entries = Vec::new();
            let (mut o, mut p) = (0u32, 0u32);
            for (a, b) in raw { o += a; p += b; entries.push(OffsetEntry { relative_offset: o, position: p }); }
            let mut bytes = Vec::new();
            for e in &entries { e.encode(&mut bytes); }
            bytes.extend_from_slice(&[0u8; 24]); // block padding
            prop_assert_eq!(decode_entries(&bytes, offset_entry_follows), entries);
        }

        #[test]
        fn garbage_decodes_to_a_monotonic_prefix(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
            let entries = decode_entries(&bytes, offset_entry_follows);
            for w in entries.windows(2) {
                prop_assert!(w[1].position > w[0].position && w[1].relative_offset > w[0].relative_offset);
            }
        }
    }

    #[test]
    fn truncate_drops_entries_at_and_after_the_cut() {
        let mut index = OffsetIndex::new(100);
        for i in 1..10u32 {
            index.maybe_add(i * 10, u64::from(i) * 100);
        }
        index.truncate_at_position(500);
        assert_eq!(
            index.last(),
            Some(OffsetEntry {
                relative_offset: 40,
                position: 400
            })
        );
        assert!(!index.maybe_add(45, 450));
        assert!(index.maybe_add(50, 500));
    }
}
