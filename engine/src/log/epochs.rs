//! The leader-epoch index of a partition log: for each leader epoch, the first offset written
//! in it (Kafka's `leader-epoch-checkpoint`, KIP-101). A follower that comes back asks the
//! leader where its last epoch ends and truncates its tail there; this index answers that
//! question from the leader's side and tells the follower which epoch it last wrote.
//!
//! Persisted in the `leader-epochs` file (written atomically) whenever a new epoch starts,
//! before the first frame of that epoch is written, and after a truncation; at open, entries
//! at or past the recovered log end are dropped (their frames never reached the disk). Epochs
//! only grow along the log.

use std::path::{Path, PathBuf};

use crate::atomic_file;
use crate::io::Storage;

pub const EPOCHS_FILE: &str = "leader-epochs";

/// One entry: offsets from `start_offset` on (up to the next entry's) were written by the
/// leader of `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochIndex {
    entries: Vec<EpochEntry>,
}

impl EpochIndex {
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch, if any frame (or entry) has one.
    pub fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Whether a frame of `epoch` written at `offset` starts a new entry.
    pub fn starts_new(&self, epoch: i32) -> bool {
        self.latest().is_none_or(|e| epoch > e.epoch)
    }

    /// Records that `epoch` starts at `offset`. Epochs below the latest are refused (the
    /// caller checks first); the latest epoch again is a no-op.
    pub fn assign(&mut self, epoch: i32, offset: u64) -> bool {
        if !self.starts_new(epoch) {
            return false;
        }
        debug_assert!(self.latest().is_none_or(|e| offset >= e.start_offset));
        self.entries.push(EpochEntry {
            epoch,
            start_offset: offset,
        });
        true
    }

    /// Drops the entries starting at or after `offset` (the log's tail is cut there).
    pub fn truncate_from(&mut self, offset: u64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < offset);
        self.entries.len() != before
    }

    /// Kafka's OffsetsForLeaderEpoch answer for `epoch`: the largest epoch at or below it
    /// that this log has, and the offset where that epoch ends (the start of the next epoch,
    /// or `log_end` for the latest). `None` if the log has no epoch at or below it.
    pub fn end_offset_for(&self, epoch: i32, log_end: u64) -> Option<(i32, u64)> {
        let i = self.entries.partition_point(|e| e.epoch <= epoch);
        let found = self.entries.get(i.checked_sub(1)?)?;
        let end = self
            .entries
            .get(i)
            .map_or(log_end, |next| next.start_offset);
        Some((found.epoch, end))
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.entries.len() * 12);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.epoch.to_le_bytes());
            out.extend_from_slice(&e.start_offset.to_le_bytes());
        }
        out
    }

    /// Decodes [`EpochIndex::encode`]'s bytes; `None` if they are not a valid index (a
    /// wrong length, epochs or offsets out of order).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let count = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        if bytes.len() != 4 + count.checked_mul(12)? {
            return None;
        }
        let mut entries = Vec::with_capacity(count);
        for chunk in bytes[4..].chunks_exact(12) {
            let epoch = i32::from_le_bytes(chunk[..4].try_into().ok()?);
            let start_offset = u64::from_le_bytes(chunk[4..].try_into().ok()?);
            if let Some(prev) = entries.last() {
                let prev: &EpochEntry = prev;
                if epoch <= prev.epoch || start_offset < prev.start_offset {
                    return None;
                }
            }
            entries.push(EpochEntry {
                epoch,
                start_offset,
            });
        }
        Some(EpochIndex { entries })
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(EPOCHS_FILE)
}

/// Writes the index (atomically; on a full disk once more after releasing `space`'s
/// reserve).
pub async fn write(
    storage: &dyn Storage,
    dir: &Path,
    index: &EpochIndex,
    space: Option<&crate::space::DiskSpace>,
) -> Result<(), atomic_file::AtomicFileError> {
    atomic_file::write_reserved(storage, &path(dir), &index.encode(), space).await
}

/// The persisted index; `None` if there is none. A damaged file is reported and read as
/// missing (the caller rebuilds what it can).
pub async fn read(storage: &dyn Storage, dir: &Path) -> Option<EpochIndex> {
    match atomic_file::read(storage, &path(dir)).await {
        Ok(Some(bytes)) => {
            let index = EpochIndex::decode(&bytes);
            if index.is_none() {
                tracing::warn!(dir = %dir.display(), "ignoring a damaged leader-epoch index");
            }
            index
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("ignoring the leader-epoch index: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(pairs: &[(i32, u64)]) -> EpochIndex {
        let mut i = EpochIndex::default();
        for (e, o) in pairs {
            assert!(i.assign(*e, *o));
        }
        i
    }

    #[test]
    fn end_offsets_follow_kafkas_rules() {
        let i = index(&[(1, 0), (3, 100), (4, 250)]);
        assert_eq!(i.end_offset_for(0, 300), None);
        assert_eq!(i.end_offset_for(1, 300), Some((1, 100)));
        assert_eq!(i.end_offset_for(2, 300), Some((1, 100)));
        assert_eq!(i.end_offset_for(3, 300), Some((3, 250)));
        assert_eq!(i.end_offset_for(9, 300), Some((4, 300)));
    }

    #[test]
    fn only_newer_epochs_start_entries_and_truncation_drops_the_tail() {
        let mut i = index(&[(1, 0), (3, 100)]);
        assert!(!i.assign(3, 150));
        assert!(!i.assign(2, 150));
        assert!(i.truncate_from(100));
        assert_eq!(
            i.latest(),
            Some(EpochEntry {
                epoch: 1,
                start_offset: 0
            })
        );
        assert!(!i.truncate_from(100));
    }

    #[test]
    fn encoding_round_trips_and_rejects_damage() {
        let i = index(&[(1, 0), (3, 100), (4, 250)]);
        assert_eq!(EpochIndex::decode(&i.encode()), Some(i.clone()));
        let mut b = i.encode();
        b.pop();
        assert_eq!(EpochIndex::decode(&b), None);
        let unordered = index(&[(1, 0)]);
        let mut b = unordered.encode();
        b[0] = 2;
        b.extend_from_slice(&0i32.to_le_bytes());
        b.extend_from_slice(&5u64.to_le_bytes());
        assert_eq!(EpochIndex::decode(&b), None);
        assert_eq!(EpochIndex::decode(&[0xff, 0xff, 0xff, 0xff]), None);
    }
}
